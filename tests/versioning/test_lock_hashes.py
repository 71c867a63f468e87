"""dvc.lock's output hashes as genops reads them (the checkpoint and graph hashes a version is tagged with)."""

from __future__ import annotations

import yaml

from genops.versioning.dvc import out_hashes


def test_the_hash_is_read_under_the_algorithm_dvc_lock_names_never_the_algorithm_itself(tmp_path):
    lock = {"schema": "2.0", "stages": {
        "train@vae": {"cmd": "genops train vae", "outs": [
            {"path": "checkpoints/vae", "hash": "md5", "md5": "0123abcd.dir", "size": 10, "nfiles": 3}]},
        "export@vae": {"cmd": "genops export vae", "outs": [
            {"path": "exported/vae", "hash": "md5"}]},  # listed, never recorded: no hash of its own
    }}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert out_hashes(tmp_path) == {"checkpoints/vae": "0123abcd.dir"}
    assert out_hashes(tmp_path / "nowhere") == {}
