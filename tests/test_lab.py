"""JupyterLab as a researcher opens it: a real Lab server on loopback, a session for a notebook
through its REST API with the project's kernel ("SAE studies"), and the notebook's cells run on
the smoke profile over the kernel's websocket (the same messages the Lab front end sends)."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from sae_studies.config import load_profile, repo_root

websocket = pytest.importorskip("websocket")
NOTEBOOK = "02_synthetic_low_rank.ipynb"  # no language model: the cheapest whole notebook


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, token: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture
def lab_server(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}"]
    cmd += ["--ServerApp.root_dir=" + str(repo_root() / "notebooks"), "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "SAE_STUDIES_PUBLISH": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"), env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            _request(f"{base}/api/status", token)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "lab.log").read_text()) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("JupyterLab did not start within 90 s:\n" + (tmp_path / "lab.log").read_text())
    yield base, token
    proc.terminate()
    proc.wait(timeout=30)


def _execute(ws, code: str, timeout: float = 600) -> None:
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "session": uuid.uuid4().hex,
                    "username": "test",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
                "channel": "shell",
            }
        )
    )
    errors, deadline = [], time.time() + timeout
    while time.time() < deadline:
        reply = json.loads(ws.recv())
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if reply["msg_type"] == "error":
            errors.append("\n".join(reply["content"]["traceback"]))
        if reply["msg_type"] == "execute_reply":
            assert reply["content"]["status"] == "ok", errors or reply["content"]
            return
    raise TimeoutError(f"cell did not finish within {timeout} s")


@pytest.mark.notebooks
def test_lab_runs_a_notebook_with_the_project_kernel(lab_server):
    base, token = lab_server
    specs = _request(f"{base}/api/kernelspecs", token)["kernelspecs"]
    assert "sae-studies" in specs and specs["sae-studies"]["spec"]["display_name"] == "SAE studies"
    session = _request(f"{base}/api/sessions", token, {"path": NOTEBOOK, "type": "notebook", "kernel": {"name": "sae-studies"}})
    kernel = session["kernel"]
    assert kernel["name"] == "sae-studies"
    ws = websocket.create_connection(
        f"ws://{base.removeprefix('http://')}/api/kernels/{kernel['id']}/channels?token={token}", timeout=600
    )
    try:
        cells = json.loads((repo_root() / "notebooks" / NOTEBOOK).read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            code = "".join(cell["source"])
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                code = 'profile = "smoke"\noverrides = {}'  # what a user types in the parameters cell
            _execute(ws, code)
    finally:
        ws.close()
    figures = load_profile("smoke").figures_dir
    assert (figures / "02_recovery.png").stat().st_size > 10_000


def test_make_lab_adds_allow_root_as_root_and_passes_options():
    out = subprocess.run(
        ["make", "-n", "lab", "LAB_ARGS=--port 8899"], cwd=repo_root(), capture_output=True, text=True, check=True
    ).stdout
    line = next(ln for ln in out.splitlines() if "jupyter lab" in ln)
    assert "--port 8899" in line
    assert ("--allow-root" in line) == (os.geteuid() == 0)
