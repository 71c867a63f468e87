"""A bundle written by an older genops loads: renamed config keys are read under their new names (named in the log),
keys no longer known are dropped (named too), so the family is rebuilt at the size it was trained at."""

from __future__ import annotations

import logging

from genops.data.spec import DataSpec
from genops.models.registry import build_family
from genops.storage.bundle import load_bundle, read_meta, save_bundle, write_meta

SPEC = DataSpec(8, 8, 1, 3)


def test_an_old_bundle_with_renamed_and_retired_keys_loads_at_its_trained_size(tmp_path, caplog):
    family = build_family("pixelcnn", SPEC, {"width": 12, "depth": 2})
    save_bundle(tmp_path, family, {"fingerprint": "x"})
    meta = read_meta(tmp_path)
    cfg = meta["cfg"]
    cfg["hidden"], cfg["layers"] = cfg.pop("width"), cfg.pop("depth")  # as genops before issue 28 wrote them
    cfg["retired_option"] = 1
    write_meta(tmp_path, meta)
    with caplog.at_level(logging.WARNING):
        loaded = load_bundle(tmp_path)
    assert (loaded.cfg.width, loaded.cfg.depth) == (12, 2)
    assert "hidden -> width" in caplog.text and "layers -> depth" in caplog.text and "retired_option" in caplog.text
    assert all((a == b).all() for a, b in zip(loaded.state_dict().values(), family.state_dict().values()))
