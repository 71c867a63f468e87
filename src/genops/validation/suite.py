"""The Great Expectations suite over the prepared data; training starts only if it passes.

The suite runs on `metadata.csv` (one row per source image) plus two small derived tables: images
per class, and the shape/dtype/count of the `train.npz`/`test.npz` arrays (read from their .npy
headers, so validation never loads the pixels). Every check is a real GE expectation so its result
appears in the HTML Data Docs; `result.json` is our own condensed, byte-stable summary of the same
results, because DVC hashes it as a dependency of training.

Great Expectations is imported inside `validate()` only: importing it costs seconds (scipy.stats)
and the CLI must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.expectations.row_conditions import Column

from genops.config.sections import ValidationConfig
from genops.errors import GenopsError, ValidationFailed
from genops.storage.atomic import atomic_dir, write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Source dtypes the converter knows how to scale to uint8 (see genops.data.convert.value_max_for).
ALLOWED_DTYPES: tuple[str, ...] = (
    "bool", "uint8", "uint16", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "index", "split", "file", "readable", "height", "width", "channels", "dtype", "raw_min", "raw_max",
    "value_max_allowed", "nonfinite", "label", "sha1", "prep_height", "prep_width", "prep_channels",
)
_INT_COLUMNS = ("index", "height", "width", "channels", "nonfinite", "label",
                "prep_height", "prep_width", "prep_channels")
_FLOAT_COLUMNS = ("raw_min", "raw_max", "value_max_allowed")
_STR_COLUMNS = ("split", "file", "dtype", "sha1", "error", "repair")
_SITE = "genops"
_N_EXAMPLES = 5  # offending rows kept in result.json
_N_SHOWN = 3  # ... and shown in the one-line message
# The id column GE reports for each offending row, per table.
_ID_COLUMN = {"images": "file", "classes": "class", "arrays": "file"}


@dataclass
class ValidationReport:
    """What `validate` found; `failures` holds one human-readable line per failed expectation."""

    success: bool
    n_rows: int
    failures: list[str] = field(default_factory=list)
    result_path: Path | None = None


@dataclass(frozen=True)
class _Outcome:
    """The parts of one GE expectation result that a message needs."""

    count: int
    total: int
    details: list[str]
    observed: Any

    def share(self) -> str:
        return f"{100.0 * self.count / self.total:.1f}%" if self.total else "n/a"

    def eg(self) -> str:
        return f", e.g. {', '.join(self.details)}" if self.details else ""


@dataclass(frozen=True)
class _Check:
    """One expectation plus how to explain its failure to a person."""

    name: str
    table: str
    expectation: Any
    label: str  # the arguments shown in the message: "nonfinite, max=0"
    explain: Callable[[_Outcome], str]
    detail: Callable[[dict], str] | None = None  # one offending row -> "file (why)"


# ----------------------------------------------------------------------------------------------
# Input tables


def _read_metadata(path: Path) -> pd.DataFrame:
    """metadata.csv with stable dtypes: strings stay strings ("" not NaN), numbers are numbers."""
    if not path.is_file():
        raise ValidationFailed(f"validate: {path} not found; run the prepare stage first")
    df = pd.read_csv(path, keep_default_na=False, na_values={c: ["", "nan", "NaN"] for c in _FLOAT_COLUMNS})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValidationFailed(f"validate: {path} lacks column(s) {', '.join(missing)}; rerun the prepare stage")
    for c in ("error", "repair"):
        if c not in df.columns:
            df[c] = ""
    for c in _STR_COLUMNS:
        df[c] = df[c].astype(str)
    for c in _INT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in _FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["readable"] = df["readable"].astype(str).str.strip().str.lower().isin(["true", "1"])
    # Derived: 0 for the first readable image with a given pixel hash, k for its k-th repeat.
    df["sha1_repeat"] = 0
    readable = df["readable"]
    df.loc[readable, "sha1_repeat"] = df[readable].groupby("sha1", sort=False).cumcount()
    return df.reset_index(drop=True)


def _class_table(df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Readable images per declared class; a class with no image at all still gets a row (0)."""
    labels = df.loc[df["readable"], "label"]
    k = int(spec.get("num_classes", 0))
    if k == 0:  # unconditional data: the whole set is one class
        rows = [{"label": -1, "class": "unlabeled", "n_images": int(len(labels))}]
    else:
        names = list(spec.get("class_names") or [])
        counts = labels.value_counts()
        rows = [{"label": c, "class": f"{c}" + (f" ({names[c]})" if c < len(names) and str(names[c]) != str(c) else ""),
                 "n_images": int(counts.get(c, 0))} for c in range(k)]
    return pd.DataFrame(rows, columns=["label", "class", "n_images"])


def _npy_header(npz: Path, key: str) -> tuple[tuple[int, ...], str] | None:
    """Shape and dtype of one array inside an .npz, read from its header without loading the data."""
    try:
        with zipfile.ZipFile(npz) as zf, zf.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
            return tuple(int(s) for s in shape), str(dtype)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _array_table(prepared_dir: Path, df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """One row per split: what the .npz arrays hold next to what metadata.csv and spec.json claim."""
    rows = []
    for split in ("train", "test"):
        npz = prepared_dir / f"{split}.npz"
        images, labels = _npy_header(npz, "images"), _npy_header(npz, "labels")
        shape = images[0] if images else ()
        rows.append({
            "file": npz.name,
            "dtype": images[1] if images else "missing",
            "shape": "x".join(str(s) for s in shape[1:]) if len(shape) == 4 else "missing",
            "n_images": shape[0] if shape else -1,
            "n_labels": labels[0][0] if labels and labels[0] else -1,
            "n_metadata": int((df["readable"] & (df["split"] == split)).sum()),
            "n_spec": -1 if spec.get(f"n_{split}") is None else int(spec[f"n_{split}"]),
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# The suite


def _build_checks(gx: Any, p: ValidationConfig, spec: dict, errors: dict[str, str]) -> list[_Check]:
    """Every expectation of the suite, in report order."""
    E = gx.expectations
    readable = Column("readable") == True  # noqa: E712  (builds a GE condition, not a Python bool)
    h, w, c, k = (int(spec[x]) for x in ("height", "width", "channels", "num_classes"))
    ok_rows = 1.0 - p.max_unreadable_fraction
    ok_dups = 1.0 - p.max_duplicate_fraction
    allowed = ", ".join(ALLOWED_DTYPES)

    def imgs(o: _Outcome) -> str:
        return f"{o.count} of {o.total} images"

    def shape_check(col: str, want: int, what: str) -> _Check:
        return _Check(
            f"prep_{what}", "images",
            E.ExpectColumnValuesToBeInSet(column=col, value_set=[want], row_condition=readable),
            f"{col}, [{want}]",
            lambda o: f"{imgs(o)} were prepared with {what} != {want}{o.eg()} (expected {want} from spec.json)",
            lambda e: f"{e['file']} ({what} {_num(e[col])})",
        )

    if k > 0:
        label_check = _Check(
            "label_in_classes", "images",
            E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(k)), row_condition=readable),
            f"label, 0..{k - 1}",
            lambda o: f"{imgs(o)} have a label outside the {k} declared classes{o.eg()} (expected 0..{k - 1})",
            lambda e: f"{e['file']} (label {_num(e['label'])})",
        )
    else:
        label_check = _Check(
            "label_in_classes", "images",
            E.ExpectColumnValuesToBeInSet(column="label", value_set=[-1], row_condition=readable),
            "label, [-1]",
            lambda o: f"{imgs(o)} carry a label but spec.json declares no classes{o.eg()} (expected -1 everywhere)",
            lambda e: f"{e['file']} (label {_num(e['label'])})",
        )

    strict = [_Check(
        "no_repairs", "images",
        E.ExpectColumnValuesToBeInSet(column="repair", value_set=[""]),
        "repair, [''] (validation.strict)",
        lambda o: f"{o.count} of {o.total} files needed a repair, which validation.strict refuses{o.eg()} "
                  "(expected every file readable, at the prepared size and channels as it is)",
        lambda e: f"{e['file']} ({e['repair']})",
    )] if p.strict else []
    return strict + [
        _Check(
            "unreadable", "images",
            E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True], mostly=round(ok_rows, 12)),
            f"readable, [True], mostly={round(ok_rows, 12)}",
            lambda o: (f"{o.count} of {o.total} files are unreadable ({o.share()}){o.eg()} "
                       f"(expected at most {100 * p.max_unreadable_fraction:.1f}%)"),
            lambda e: f"{e['file']} ({errors[e['file']]})" if errors.get(e["file"]) else str(e["file"]),
        ),
        _Check(
            "row_count", "images",
            E.ExpectTableRowCountToBeBetween(min_value=p.min_rows, max_value=p.max_rows, row_condition=readable),
            f"readable rows, {p.min_rows}..{p.max_rows}",
            lambda o: f"{o.observed} readable images (expected {p.min_rows} to {p.max_rows})",
        ),
        shape_check("prep_height", h, "height"),
        shape_check("prep_width", w, "width"),
        shape_check("prep_channels", c, "channels"),
        _Check(
            "dtype", "images",
            E.ExpectColumnValuesToBeInSet(column="dtype", value_set=list(ALLOWED_DTYPES), row_condition=readable),
            "dtype, ALLOWED_DTYPES",
            lambda o: f"{imgs(o)} have an unsupported pixel dtype{o.eg()} (expected one of {allowed})",
            lambda e: f"{e['file']} ({e['dtype']})",
        ),
        _Check(
            "value_min", "images",
            E.ExpectColumnValuesToBeBetween(column="raw_min", min_value=0, row_condition=readable),
            "raw_min, min=0",
            lambda o: f"{imgs(o)} have negative pixel values{o.eg()} (expected >= 0)",
            lambda e: f"{e['file']} (min {_num(e['raw_min'])})",
        ),
        _Check(
            "value_max", "images",
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="value_max_allowed", column_B="raw_max", or_equal=True, row_condition=readable),
            "value_max_allowed >= raw_max",
            lambda o: f"{imgs(o)} have pixel values above their dtype's full scale{o.eg()} "
                      "(expected raw_max <= value_max_allowed)",
            lambda e: f"{e['file']} (max {_num(e['raw_max'])} > {_num(e['value_max_allowed'])})",
        ),
        _Check(
            "nonfinite", "images",
            E.ExpectColumnValuesToBeBetween(column="nonfinite", max_value=0, row_condition=readable),
            "nonfinite, max=0",
            lambda o: f"{imgs(o)} have NaN/inf pixels{o.eg()} (expected none)",
            lambda e: f"{e['file']} ({_num(e['nonfinite'])} px)",
        ),
        label_check,
        _Check(
            "duplicates", "images",
            E.ExpectColumnValuesToBeBetween(column="sha1_repeat", max_value=0, mostly=round(ok_dups, 12),
                                            row_condition=readable),
            f"sha1_repeat, max=0, mostly={round(ok_dups, 12)}",
            lambda o: (f"{imgs(o)} ({o.share()}) repeat the pixels of an earlier image (same sha1){o.eg()} "
                       f"(expected at most {100 * p.max_duplicate_fraction:.1f}%)"),
        ),
        _Check(
            "min_per_class", "classes",
            E.ExpectColumnValuesToBeBetween(column="n_images", min_value=p.min_per_class),
            f"n_images, min={p.min_per_class}",
            lambda o: f"{o.count} of {o.total} classes have too few readable images{o.eg()} "
                      f"(expected at least {p.min_per_class} per class)",
            lambda e: f"class {e['class']}: {_num(e['n_images'])}",
        ),
        _Check(
            "array_dtype", "arrays",
            E.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"]),
            "dtype, [uint8]",
            lambda o: f"{o.count} prepared array file(s) hold the wrong dtype{o.eg()} (expected uint8)",
            lambda e: f"{e['file']} ({e['dtype']})",
        ),
        _Check(
            "array_shape", "arrays",
            E.ExpectColumnValuesToBeInSet(column="shape", value_set=[f"{h}x{w}x{c}"]),
            f"shape, [{h}x{w}x{c}]",
            lambda o: f"{o.count} prepared array file(s) hold images of the wrong shape{o.eg()} "
                      f"(expected {h}x{w}x{c} from spec.json)",
            lambda e: f"{e['file']} ({e['shape']})",
        ),
        _Check(
            "array_rows", "arrays",
            E.ExpectColumnPairValuesToBeEqual(column_A="n_images", column_B="n_metadata"),
            "n_images == n_metadata",
            lambda o: f"{o.count} prepared array file(s) disagree with metadata.csv on the image count{o.eg()}",
            lambda e: f"{e['file']} ({_num(e['n_images'])} arrays vs {_num(e['n_metadata'])} rows)",
        ),
        _Check(
            "array_labels", "arrays",
            E.ExpectColumnPairValuesToBeEqual(column_A="n_labels", column_B="n_images"),
            "n_labels == n_images",
            lambda o: f"{o.count} prepared array file(s) hold a different number of labels and images{o.eg()}",
            lambda e: f"{e['file']} ({_num(e['n_labels'])} labels vs {_num(e['n_images'])} images)",
        ),
        _Check(
            "spec_counts", "arrays",
            E.ExpectColumnPairValuesToBeEqual(column_A="n_spec", column_B="n_metadata"),
            "n_spec == n_metadata",
            lambda o: f"spec.json's n_train/n_test disagree with metadata.csv{o.eg()}",
            lambda e: f"{e['file']} (spec {_num(e['n_spec'])} vs {_num(e['n_metadata'])} rows)",
        ),
    ]


# ----------------------------------------------------------------------------------------------
# Helpers


def _repairs(prepared_dir: Path) -> dict:
    path = prepared_dir / "repairs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _num(v: Any) -> str:
    """A pixel count or value as a person writes it: 12 not 12.0, nan not NaN."""
    v = _plain(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "nan" if v is None else str(v)


def _plain(obj: Any) -> Any:
    """JSON-safe builtins with NaN as None, so result.json is strict JSON and stable."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence GE's deprecation warnings and INFO/WARNING chatter; our own message says what failed."""
    ge_log = logging.getLogger("great_expectations")
    level = ge_log.level
    ge_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        ge_log.setLevel(level)


def _context(gx: Any, docs_dir: Path | None) -> Any:
    """An ephemeral GE context (stores in memory) with our Data Docs site, when asked for, at `docs_dir`."""
    ctx = gx.get_context(mode="ephemeral")
    # Progress bars off: a dict is what the context reads ("globally"), no config class needed.
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    if docs_dir is not None:  # the site config as GE's "Host and share Data Docs" guide writes it
        ctx.add_data_docs_site(site_name=_SITE, site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)}})
    return ctx


def _entry(check: _Check, er: Any) -> dict:
    """Condense one GE ExpectationValidationResult into a deterministic result.json entry."""
    res = er.result or {}
    id_col = _ID_COLUMN[check.table]
    rows = [r for r in (res.get("partial_unexpected_index_list") or []) if isinstance(r, dict)][:_N_EXAMPLES]
    ids = [_plain(r.get(id_col)) for r in rows]
    details = [check.detail(r) if check.detail else str(_plain(r.get(id_col))) for r in rows[:_N_SHOWN]]
    count = int(res.get("unexpected_count") or 0)
    total = int(res.get("element_count") or 0)
    observed = _plain(res.get("observed_value"))
    success = bool(er.success)
    exc = er.exception_info or {}
    if isinstance(exc, dict) and "raised_exception" not in exc:  # keyed per metric
        exc = next((v for v in exc.values() if isinstance(v, dict) and v.get("raised_exception")), {})
    error = exc.get("exception_message") if isinstance(exc, dict) and exc.get("raised_exception") else None
    if error:
        success = False
    kwargs = {k: v for k, v in er.expectation_config.kwargs.items() if k not in ("batch_id", "result_format")}
    entry = {
        "check": check.name,
        "table": check.table,
        "expectation": er.expectation_config.type,
        "column": kwargs.get("column", kwargs.get("column_B")),
        "success": success,
        "unexpected_count": count,
        "element_count": total,
        "observed_value": observed,
        "examples": ids,
        "kwargs": _plain(kwargs),
        "message": None,
    }
    outcome = _Outcome(count, total, details, observed)
    if not success:
        why = f"GE could not evaluate it: {error}" if error else check.explain(outcome)
        entry["message"] = f"{er.expectation_config.type}({check.label}): {why}"
    return entry


def _run_suite(gx: Any, ctx: Any, checks: list[_Check], tables: dict[str, pd.DataFrame], docs: bool) -> list[dict]:
    """One pandas asset, suite, validation definition and Checkpoint per table (each table is its own dataframe,
    given at run time); the Checkpoint's UpdateDataDocsAction writes the Data Docs. Results back in check order."""
    source = ctx.data_sources.add_pandas("genops")
    by_name: dict[str, Any] = {}
    for table, df in tables.items():
        mine = [ch for ch in checks if ch.table == table]
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"genops_{table}"))
        for ch in mine:
            ch.expectation.meta = {"check": ch.name}
            suite.add_expectation(ch.expectation)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"genops_{table}", data=batch, suite=suite))
        actions = [UpdateDataDocsAction(name="data_docs", site_names=[_SITE])] if docs else []
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"genops_{table}", validation_definitions=[vd], actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _N_EXAMPLES,
                           "unexpected_index_column_names": [_ID_COLUMN[table]]}))
        outcome = checkpoint.run(batch_parameters={"dataframe": df})
        for result in outcome.run_results.values():
            for er in result.results:
                by_name[(er.expectation_config.meta or {}).get("check")] = er
    entries = []
    for ch in checks:
        er = by_name.get(ch.name)
        if er is None:
            raise GenopsError(f"validate: GE returned no result for check {ch.name!r}")
        entries.append(_entry(ch, er))
    return entries


# ----------------------------------------------------------------------------------------------
# Stage entry point


def validate(p: ValidationConfig, prepared_dir: Path, report_dir: Path) -> ValidationReport:
    """Validate `prepared_dir`, write report_dir/result.json (+ docs/); raise ValidationFailed if bad.

    result.json and the Data Docs are written before raising, so a failed run can be inspected.
    """
    prepared_dir, report_dir = Path(prepared_dir), Path(report_dir)
    spec_path = prepared_dir / "spec.json"
    if not spec_path.is_file():
        raise ValidationFailed(f"validate: {spec_path} not found; run the prepare stage first")
    spec = json.loads(spec_path.read_text())
    lacking = [key for key in ("height", "width", "channels", "num_classes") if key not in spec]
    if lacking:
        raise ValidationFailed(f"validate: {spec_path} lacks {', '.join(lacking)}; rerun the prepare stage")
    df = _read_metadata(prepared_dir / "metadata.csv")
    tables = {
        "images": df,
        "classes": _class_table(df, spec),
        "arrays": _array_table(prepared_dir, df, spec),
    }
    errors = dict(zip(df["file"], df["error"], strict=True))

    report_dir.mkdir(parents=True, exist_ok=True)
    docs_path = report_dir / "docs"
    with _quiet():
        checks = _build_checks(gx, p, spec, errors)
        docs_cm = atomic_dir(docs_path) if p.data_docs else contextlib.nullcontext(None)
        with docs_cm as docs_tmp:
            ctx = _context(gx, docs_tmp)
            entries = _run_suite(gx, ctx, checks, tables, docs_tmp is not None)
            if docs_tmp is not None and not (docs_tmp / "index.html").is_file():
                raise GenopsError(f"validate: Great Expectations wrote no index.html under {docs_path}")
    if not p.data_docs and docs_path.exists():
        shutil.rmtree(docs_path)  # stale docs would describe another run

    success = all(e["success"] for e in entries)
    result = {
        "success": success,
        "n_rows": int(len(df)),
        "n_readable": int(df["readable"].sum()),
        "data_hash": spec.get("data_hash"),
        "expectations": entries,
        # every repair prepare made (kind -> count and all files), so a skipped or resized file is on record
        "repairs": _repairs(prepared_dir),
    }
    result_path = report_dir / "result.json"
    write_json_atomic(result_path, result)
    failures = [e["message"] for e in entries if not e["success"]]
    report = ValidationReport(success, int(len(df)), failures, result_path)
    if not success:
        where = f"\nsee {result_path}" + (f" and {docs_path / 'index.html'}" if p.data_docs else "")
        exc = ValidationFailed(
            f"data validation failed: {len(failures)} of {len(entries)} expectations not met\n"
            + "\n".join(f"- {f}" for f in failures) + where
        )
        exc.report = report  # type: ignore[attr-defined]  # for callers that want the details
        raise exc
    log.info("validate: %d expectations met on %d images", len(entries), report.n_rows)
    return report
