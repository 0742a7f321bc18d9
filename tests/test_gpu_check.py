"""The GPU check's CPU dry run (tiny profile): every part runs, so the script cannot rot between GPU sessions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--profile", "tiny", "--device", "cpu"]
        + ["--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["tests"]["rc"] == 0 and result["tests"].get("failed", 0) == 0  # skipped here: no CUDA
    models = {"ssl", "ssl-supervised", "scratch", "scratch-supervised", "classical"}
    assert set(result["image"]["test_macro_f1"]) == models
    for run in (result["image"]["pretrain"], result["mlm"], result["compile"]["off"], result["compile"]["on"]):
        assert run["samples_per_s"] > 0 and 0 <= run["data_wait_share"] <= 1
    assert result["mlm"]["max_steps"] == 4
    assert "| image pretrain 2 epochs, compile on |" in proc.stdout
    assert (out / "gpu_check.md").read_text().startswith("GPU check on cpu (tiny profile)")


def test_the_gpu_check_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: --device cuda")
    assert not (tmp_path / "gpu_check.json").exists()
