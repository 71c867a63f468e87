"""End to end through the real components: Prefect flow, DVC, MLflow registry, ONNX Runtime serving.

Each test works in a fresh git + DVC copy of the project with an MLflow SQLite store in a temp dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from tests.conftest import env_for, make_project, run

pytestmark = pytest.mark.integration


def _client(tmp: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _lock_and_weights(root: Path) -> tuple[str, float]:
    return (root / "dvc.lock").read_text(), (root / "checkpoints" / "vae" / "weights.safetensors").stat().st_mtime


def test_flow_registers_serves_and_leaves_dvc_clean(tmp_path):
    root = make_project(tmp_path / "proj")
    env = env_for(root, tmp_path)
    out = run(["genops", "pipeline"], root, env)
    summary = json.loads(out.stdout)
    assert not summary["failed"] and {s["status"] for s in summary["stages"]} == {"ran"}

    for fam in ("autoencoder", "vae"):
        metrics = json.loads((root / "metrics" / f"{fam}.json").read_text())
        assert np.isfinite(metrics[metrics["primary_metric"]])
        assert (root / "reports" / fam / "eval" / "samples.png").is_file()
    vae = json.loads((root / "metrics" / "vae.json").read_text())
    assert vae["test_nll_bpd"] > 0 and vae["test_elbo_nats"] < 0
    assert vae["primary_metric"] == "fid" and vae["fid"] > 0 and 0 <= vae["recall"] <= 1
    assert 0 <= vae["modes_covered"] <= 10
    assert vae["fid_low"] <= vae["fid"] <= vae["fid_high"] and vae["bootstrap_samples"] == 100
    assert vae["copy_fraction"] <= 0.1 and 0 < vae["test_copy_fraction"] < 0.1 and vae["copy_threshold"] > 0
    assert (root / "reports" / "vae" / "eval" / "nearest.png").is_file()
    evaluator = json.loads((root / "metrics" / "evaluator.json").read_text())
    assert evaluator["feature_space"] == "classifier" and 0 <= evaluator["test_accuracy"] <= 1
    report = (root / "reports" / "comparison" / "comparison.md").read_text()
    assert "| vae |" in report and "| autoencoder |" in report and "real data (floor)" in report

    client = _client(tmp_path)
    champion = client.get_model_version_by_alias("genops-vae", "champion")
    assert champion.tags["genops.data_hash"] and champion.tags["genops.params_hash"]
    assert len(champion.tags["genops.git_commit"]) >= 40
    assert champion.tags["genops.promotion.decision"] == "champion"

    # DVC agrees the flow's work is done: status is clean and repro re-runs nothing.
    assert "up to date" in run(["dvc", "status"], root, env).stdout
    before = _lock_and_weights(root)
    assert "didn't change" in run(["dvc", "repro"], root, env).stdout
    assert _lock_and_weights(root) == before

    # Each stage depends on the code it runs: an edit under src/genops/evaluation makes every evaluate@ stale.
    stability = root / "src" / "genops" / "evaluation" / "stability.py"
    original = stability.read_text()
    stability.write_text(original + "\n# an edit\n")
    stale = set(json.loads(run(["dvc", "status", "--json"], root, env).stdout))
    assert {"evaluate@autoencoder", "evaluate@vae", "evaluator"} <= stale
    assert not {"prepare", "validate"} & stale
    stability.write_text(original)
    assert "up to date" in run(["dvc", "status"], root, env).stdout

    # Settings that do not change training never retrain: weights stay, family.json follows the settings.
    weights = root / "checkpoints" / "vae" / "weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    run(["genops", "train", "vae", "--set", "train.progress=false", "--set", "vae.evaluate.n_samples=20"], root, env)
    assert weights.stat().st_mtime_ns == mtime
    stored = json.loads((root / "checkpoints" / "vae" / "family.json").read_text())
    assert stored["cfg"]["evaluate"] == {"n_samples": 20}
    run(["genops", "train", "vae"], root, env)
    assert weights.stat().st_mtime_ns == mtime
    assert "up to date" in run(["dvc", "status"], root, env).stdout

    # Serving from the registry, ONNX Runtime by default and torch on request.
    run(["genops", "sample", "vae", "--n", "6", "--out", str(tmp_path / "s.npz")], root, env)
    with np.load(tmp_path / "s.npz") as npz:
        onnx_images = npz["images"]
    assert onnx_images.dtype == np.uint8 and onnx_images.shape == (6, 28, 28)
    run(["genops", "sample", "vae", "--n", "6", "--backend", "torch", "--out", str(tmp_path / "t.npz")], root, env)
    with np.load(tmp_path / "t.npz") as npz:
        assert np.abs(npz["images"].astype(int) - onnx_images.astype(int)).max() <= 1
    run(["genops", "sample", "autoencoder", "--out", str(tmp_path / "grid.png")], root, env)
    assert (tmp_path / "grid.png").stat().st_size > 0

    # Every file of a version has its sha256 in the version's tags; a copy changed in the artifact store is refused
    # before it is loaded, naming the file.
    assert champion.tags["genops.sha256.weights.safetensors"] and champion.tags["genops.sha256.sampler.onnx"]
    store = Path(urlparse(client.get_model_version_download_uri("genops-autoencoder", "1")).path)
    (stored,) = store.rglob("artifacts/genops/weights.safetensors")
    pristine = stored.read_bytes()
    stored.write_bytes(pristine[:-1] + bytes([pristine[-1] ^ 1]))
    bad = run(["genops", "sample", "autoencoder", "--backend", "torch", "--out", str(tmp_path / "x.png")], root, env,
              check=False)
    assert bad.returncode != 0 and "weights.safetensors: sha256" in bad.stderr and "not loaded" in bad.stderr
    stored.write_bytes(pristine)

    # A worse candidate is registered but does not displace the champion.
    metrics_path = root / "metrics" / "vae.json"
    worse = json.loads(metrics_path.read_text())
    primary = worse["primary_metric"]
    worse[primary] += 1.0  # FID: higher is worse
    metrics_path.write_text(json.dumps(worse))
    result = json.loads(run(["genops", "register", "vae"], root, env).stdout)
    assert result["alias"] == "challenger" and result["version"] == 2
    assert client.get_model_version_by_alias("genops-vae", "champion").version == champion.version
    challenger = client.get_model_version_by_alias("genops-vae", "challenger")
    assert challenger.tags["genops.promotion.decision"] == "challenger"
    assert float(challenger.tags["genops.promotion.champion_value"]) == pytest.approx(worse[primary] - 1.0)
    # The rule's numbers are recorded: margin (min_improvement 0), the candidate's interval half-width, the larger.
    half = (worse[f"{primary}_high"] - worse[f"{primary}_low"]) / 2
    assert float(challenger.tags["genops.promotion.interval_half_width"]) == pytest.approx(half)
    assert float(challenger.tags["genops.promotion.required_improvement"]) == pytest.approx(half)
    assert result["margin"] == 0.0 and result["interval_half_width"] == pytest.approx(half)
    # A far better candidate that copies its training images is registered but never promoted.
    metrics_path.write_text(json.dumps({**worse, primary: worse[primary] / 10, "copy_fraction": 0.5}))
    result = json.loads(run(["genops", "register", "vae"], root, env).stdout)
    assert result["alias"] == "challenger" and "exceeds register.max_copy_fraction 0.1" in result["reason"]
    assert client.get_model_version_by_alias("genops-vae", "champion").version == champion.version
    assert client.get_model_version_by_alias("genops-vae", "challenger").tags["genops.promotion.copy_fraction"] == "0.5"
    # Registration is idempotent: the same files again (a retry, a rerun after a kill) make no new version.
    again = json.loads(run(["genops", "register", "vae"], root, env).stdout)
    assert again["already_registered"] and again["version"] == result["version"] == 3
    assert len(client.search_model_versions("name = 'genops-vae'")) == 3


def test_dvc_repro_on_a_fresh_clone_then_flow_skips_everything(tmp_path):
    root = make_project(tmp_path / "proj", {"families": ["autoencoder"]})
    env = env_for(root, tmp_path)
    run(["dvc", "repro"], root, env)
    assert (root / "exported" / "autoencoder" / "sampler.onnx").is_file()
    assert json.loads((root / "reports" / "registry" / "autoencoder.json").read_text())["alias"] == "champion"
    summary = json.loads(run(["genops", "pipeline"], root, env).stdout)
    assert {s["status"] for s in summary["stages"]} == {"skipped (unchanged)"}
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], root, env).stdout)
    assert "metrics/autoencoder.json" in json.dumps(metrics)


def test_smoke_gans_run_in_a_scratch_workspace_and_leave_the_registry_alone(tmp_path):
    root = make_project(tmp_path / "proj", {"families": ["vae", "gan", "wgan-gp", "stylegan"]})
    env = env_for(root, tmp_path)
    run(["genops", "pipeline", "--smoke", "--families", "gan,wgan-gp,stylegan", "--set", "train.steps=8"], root, env)
    smoke = root / ".genops" / "smoke"
    for fam in ("gan", "wgan-gp", "stylegan"):
        assert json.loads((smoke / "reports" / "registry" / f"{fam}.json").read_text())["version"] == 1
        metrics = json.loads((smoke / "metrics" / f"{fam}.json").read_text())
        assert np.isfinite(metrics["fid"]) and "loss_cv_last_half" in metrics
    assert "| gan |" in (smoke / "reports" / "comparison" / "comparison.md").read_text()
    # StyleGAN's own claim and pictures: path length in z and in w, truncation variants, the style-mixing grid.
    style = json.loads((smoke / "metrics" / "stylegan.json").read_text())
    assert style["ppl_z"] > 0 and style["ppl_w"] > 0 and style["ppl_w_over_z"] > 0
    assert {"psi050_fid", "psi050_precision", "psi070_recall"} <= set(style)
    assert (smoke / "reports" / "stylegan" / "eval" / "style_mixing.png").is_file()
    # The registered generator samples with a truncation psi, through ONNX Runtime.
    smoke_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{smoke / 'mlflow.db'}"}
    out = tmp_path / "style.npz"
    run(["genops", "sample", "stylegan", "--n", "3", "--truncation", "0.5", "--out", str(out)], smoke, smoke_env)
    assert np.load(out)["images"].shape == (3, 28, 28)
    refused = run(["genops", "sample", "gan", "--n", "3", "--truncation", "0.5", "--out", str(out)], smoke,
                  smoke_env, check=False)
    assert refused.returncode != 0 and "takes no --truncation" in refused.stderr
    assert not (root / "checkpoints").exists()
    assert not (tmp_path / "mlflow.db").exists() or not _client(tmp_path).search_registered_models()


def test_corrupted_dataset_stops_before_training_and_registers_nothing(tmp_path):
    images = np.random.default_rng(0).random((200, 16, 16)).astype(np.float32)
    images[::10, 3, 3] = np.nan  # 20 images with NaN pixels
    np.savez(tmp_path / "bad.npz", images=images, labels=np.arange(200) % 4)
    root = make_project(tmp_path / "proj", {"data.source": str(tmp_path / "bad.npz"), "data.limit": None})
    env = env_for(root, tmp_path)
    proc = run(["genops", "pipeline"], root, env, check=False)
    assert proc.returncode != 0
    assert "nonfinite" in proc.stderr and "array[0]" in proc.stderr
    assert not (root / "checkpoints").exists()
    assert not (tmp_path / "mlflow.db").exists() or not _client(tmp_path).search_registered_models()


def test_autoregressive_families_run_on_their_own_sampling_budget_and_serve_from_the_registry(tmp_path):
    import onnx

    root = make_project(tmp_path / "proj", {"families": ["pixelcnn", "vqvae"]})
    env = env_for(root, tmp_path)
    summary = json.loads(run(["genops", "pipeline"], root, env).stdout)
    assert not summary["failed"]
    pixel = json.loads((root / "metrics" / "pixelcnn.json").read_text())
    assert pixel["n_samples"] == 16  # pixelcnn.evaluate.n_samples, below the floor's 48
    assert 0 < pixel["test_nll_bpd"] < 8.0  # exact NLL: below the uniform 8 bits/dim after a few steps
    vq = json.loads((root / "metrics" / "vqvae.json").read_text())
    assert vq["n_samples"] == 48 and vq["test_codebook_perplexity"] > 1.0
    assert 0 <= vq["test_dead_codes"] <= vq["codebook_size"]
    # The prior runs on the rows generated so far: its code grid has a dynamic row axis.
    prior = onnx.load(str(root / "exported" / "vqvae" / "prior.onnx"))
    dims = prior.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_param and not dims[2].dim_param
    out = tmp_path / "vq.npz"
    run(["genops", "sample", "vqvae", "--n", "3", "--out", str(out)], root, env)
    assert np.load(out)["images"].shape == (3, 28, 28)


def test_cyclegan_registers_with_both_datasets_and_translates_a_folder(tmp_path):
    """Domain B (sklearn digits, upscaled) reaches training, the lineage tags and the ONNX bank; `--input`
    translates a folder through the registered graphs, naming the file it could not read."""
    from PIL import Image

    root = make_project(tmp_path / "proj", {"families": ["cyclegan"]})
    env = env_for(root, tmp_path)
    summary = json.loads(run(["genops", "pipeline"], root, env).stdout)
    assert not summary["failed"]
    metrics = json.loads((root / "metrics" / "cyclegan.json").read_text())
    for key in ("fid", "translation_fid_b2a", "translation_fid_a2b", "cycle_l1", "content_kept_b2a",
                "content_untranslated_b"):
        assert np.isfinite(metrics[key]), key
    assert (root / "reports" / "cyclegan" / "eval" / "translation.png").is_file()
    version = _client(tmp_path).get_model_version("genops-cyclegan", "1")
    assert version.tags["genops.data.domain_b.source"] == "digits" and version.tags["genops.data.domain_b.hash"]
    folder = tmp_path / "to-translate"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "translated.npz"
    proc = run(["genops", "sample", "cyclegan", "--input", str(folder), "--out", str(out)], root, env)
    assert "broken.png" in proc.stderr and "resized 8x8 -> 28x28" in proc.stderr
    assert np.load(out)["images"].shape == (3, 28, 28)
    refused = run(["genops", "sample", "cyclegan", "--n", "2", "--direction", "a2b"], root, env, check=False)
    assert refused.returncode != 0 and "--direction is for --input" in refused.stderr


def test_latent_diffusion_trains_on_the_registered_vae_and_records_its_version(tmp_path):
    root = make_project(tmp_path / "proj", {"families": ["vae"], "stacked": {"latent-diffusion": "vae"}})
    env = env_for(root, tmp_path)
    summary = json.loads(run(["genops", "pipeline"], root, env).stdout)
    assert not summary["failed"]
    order = [s["stage"] for s in summary["stages"]]
    assert order.index("register@vae") < order.index("train-stacked@latent-diffusion")
    client = _client(tmp_path)
    vae = client.get_model_version_by_alias("genops-vae", "champion")
    latent = client.get_model_version_by_alias("genops-latent-diffusion", "champion")
    assert latent.tags["genops.base.model"] == "genops-vae"
    assert latent.tags["genops.base.version"] == str(vae.version)
    assert latent.tags["genops.base.run_id"] == vae.run_id
    metrics = json.loads((root / "metrics" / "latent-diffusion.json").read_text())
    assert {"ddpm_fid", "ddim2_fid", "test_latent_loss", "vae_recon_mse"} <= set(metrics)

    out = tmp_path / "latent.npz"
    result = json.loads(run(["genops", "sample", "latent-diffusion", "--n", "3", "--steps", "3", "--eta", "0.5",
                             "--out", str(out)], root, env).stdout)
    assert result["steps"] == 3 and np.load(out)["images"].shape == (3, 28, 28)
    bad = run(["genops", "sample", "latent-diffusion", "--steps", "500", "--out", str(out)], root, env, check=False)
    assert bad.returncode != 0 and "expected 1..20" in bad.stderr
    bad = run(["genops", "sample", "vae", "--steps", "3", "--out", str(out)], root, env, check=False)
    assert bad.returncode != 0 and "vae sampling takes no --steps" in bad.stderr


def test_a_stacked_family_listed_as_independent_is_refused_before_training(tmp_path):
    from genops.config import validate
    from genops.errors import GenopsError

    with pytest.raises(GenopsError, match="stacked:"):
        validate({"families": ["vae", "latent-diffusion"], "stacked": {}}, "params.yaml")
    with pytest.raises(GenopsError, match="stacked.vae"):
        validate({"families": ["autoencoder"], "stacked": {"vae": "autoencoder"}}, "params.yaml")
    validate({"families": ["vae"], "stacked": {"latent-diffusion": "vae"}}, "params.yaml")
