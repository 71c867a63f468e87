# CUDA-capable image: torch's CUDA wheels and onnxruntime-gpu[cuda,cudnn] bring the CUDA 13 / cuDNN 9
# user-space libraries; run with the NVIDIA container toolkit (`docker run --gpus all ...`).
# Without a GPU the same image runs on the CPU (the code picks the device at run time).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update && apt-get install -y --no-install-recommends git make && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install -e ".[cuda,dask]" -c constraints.txt

# The rest of the repository (dvc.yaml, params.yaml, flows/, .dvc/, .git/): DVC needs the git repo.
COPY . .
RUN git config --global --add safe.directory /app

# MLflow UI: docker run -p 5000:5000 IMAGE make mlflow-ui
EXPOSE 5000
CMD ["genops", "pipeline"]
