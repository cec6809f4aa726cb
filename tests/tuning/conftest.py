import os
import socket
import subprocess
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The smallest search that still trains: ViT-pico/8 at 32 px (16 patches), 2 steps of 16 images.
TINY = ["--model", "vit_pico8", "--dataset", "shapes/small", "--image-size", "32", "--batch-size", "16",
        "--steps-per-epoch", "2", "--epochs-per-trial", "1"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cli(args, log_path, **env):
    """`keras-vit ARGS` in a subprocess on this test run's backend, output to `log_path`."""
    import keras

    environment = {key: value for key, value in os.environ.items() if not key.startswith("KERASTUNER_")}
    environment.update(KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                       PYTHONPATH=REPO + os.pathsep + environment.get("PYTHONPATH", ""), **env)
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "keras_vit.cli", *map(str, args)], stdout=log,
                            stderr=subprocess.STDOUT, env=environment, cwd=REPO)


def wait_for(condition, timeout, what, processes=()):
    """Polls `condition()` until it is truthy; fails after `timeout` s or if a process died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        for process in processes:
            if process.poll() not in (None, 0):
                raise AssertionError(f"a process exited with {process.returncode} while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
