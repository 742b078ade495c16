"""The keys file's token quotas: kept through a save and load, refused when out of range (in the file too), and asked
for at hello only when the key sets them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ipc import runtime_dir
from kernel.gateway import keys
from kernel.gateway.agents import quotas


def test_quotas_round_trip_and_only_set_ones_are_asked_for(tmp_path):
    path = str(tmp_path / "keys.json")
    keys.add(path, "metered", tokens_per_minute=600, max_tokens_total=10_000)
    keys.add(path, "free")
    metered, free = keys.load(path)
    assert (metered.tokens_per_minute, metered.max_tokens_total) == (600, 10_000)
    assert quotas(metered) == {"tokens_per_minute": 600, "max_tokens_total": 10_000}
    assert quotas(free) == {}


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "100", 1 << 60])
def test_out_of_range_quotas_are_refused(tmp_path, value):
    path = str(tmp_path / "keys.json")
    with pytest.raises(keys.KeyFileError):
        keys.add(path, "bad", tokens_per_minute=value)
    keys.add(path, "good")
    body = json.loads(runtime_dir.read_secret(path))
    body["keys"][0]["max_tokens_total"] = value
    runtime_dir.write_secret(path, json.dumps(body))
    with pytest.raises(keys.KeyFileError):
        keys.load(path)


def test_the_cli_sets_a_keys_quota(tmp_path):
    path = str(tmp_path / "keys.json")
    argv = ["gateway", "keys", "add", "metered", "--tokens-per-minute", "600", "--max-tokens-total", "9000"]
    done = subprocess.run(
        [sys.executable, "-m", "kernel.cli", *argv, "--file", path], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (entry,) = keys.load(path)
    assert (entry.agent, entry.tokens_per_minute, entry.max_tokens_total) == ("metered", 600, 9000)
    refused = subprocess.run(
        [sys.executable, "-m", "kernel.cli", *argv[:4], "--tokens-per-minute", "0", "--file", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and len(keys.load(path)) == 1
