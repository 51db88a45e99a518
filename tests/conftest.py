import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_samples() -> dict[str, dict]:
    """Every custom resource in samples/, keyed by file stem."""
    out = {}
    for path in sorted((ROOT / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[path.stem] = doc
    return out


@pytest.fixture
def samples() -> dict[str, dict]:
    return load_samples()
