"""Callbacks that keep training progress safe: resumable checkpoints and a stop on NaN loss.

`TrainingCheckpoint` writes the model weights with the optimizer state
(step counter, moments, EMA) and a small JSON with the epoch, the step inside it
and the history so far, every epoch and, when asked, every N steps. The weights
go to a new file first; then the JSON, which names that file, is written under a
temporary name and renamed into place; only then is the older weights file
removed. A process killed at any moment of a save (SIGKILL, preemption) leaves
one whole checkpoint behind. `restore_checkpoint` loads it back before `fit`.
"""

import math
import os
import re

import keras
import numpy as np

from keras_vit.training.run_folder import read_json, write_json_atomically

STATE_FILE = "checkpoint.json"
# A checkpoint's weights file: only such a name, inside the checkpoint folder, is ever read.
_WEIGHTS_NAME = re.compile(r"^checkpoint-\d+\.weights\.h5$")


def optimizer_steps(model):
    """The optimizer's step counter as an int (also for a tf.distribute MirroredVariable)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations.value))


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves a resumable checkpoint at every epoch end and every `save_every_steps` steps.

    Args:
        directory: folder of the checkpoint (created when needed).
        save_every_steps: also save after every this many training steps
            (None: only at epoch ends).
        history: epoch logs of the epochs before this `fit` call, kept in the
            checkpoint so a resumed run reports the whole history.
        steps_per_epoch: steps in a full epoch; lets a `fit` call that
            starts mid-epoch (after a resume) count its batches from there.
        initial_step: steps of the first epoch already done before this `fit`.
    """

    def __init__(self, directory, save_every_steps=None, history=None, steps_per_epoch=None, initial_step=0):
        super().__init__()
        if save_every_steps is not None and save_every_steps < 1:
            raise ValueError(f"save_every_steps must be None or >= 1, got {save_every_steps}.")
        self.directory = directory
        self.save_every_steps = save_every_steps
        self.history = [dict(logs) for logs in (history or [])]
        self.steps_per_epoch = steps_per_epoch
        self.initial_step = initial_step
        self._epoch = 0
        self._first_epoch = None
        self._epoch_start_steps = 0
        self._saved_steps = 0

    # Reading `self.model` syncs the JAX state, so batches count steps themselves.
    def on_train_begin(self, logs=None):
        self._saved_steps = optimizer_steps(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._epoch = epoch
        self._epoch_start_steps = optimizer_steps(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if not self.save_every_steps:
            return
        steps_done = self._epoch_start_steps + batch + 1
        step = batch + 1 + (self.initial_step if self._epoch == self._first_epoch else 0)
        epoch_ends = self.steps_per_epoch is not None and step >= self.steps_per_epoch
        if steps_done // self.save_every_steps > self._saved_steps // self.save_every_steps and not epoch_ends:
            self.save(self._epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({key: float(np.asarray(value)) for key, value in (logs or {}).items()})
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        """Writes the checkpoint of `epoch` epochs and `step` more steps done."""
        os.makedirs(self.directory, exist_ok=True)
        steps_done = optimizer_steps(self.model)
        self._saved_steps = steps_done
        weights = f"checkpoint-{steps_done}.weights.h5"
        self.model.save_weights(os.path.join(self.directory, weights))
        state = {
            "epoch": epoch,
            "step": step,
            "optimizer_steps": steps_done,
            "weights": weights,
            "history": self.history,
        }
        write_json_atomically(os.path.join(self.directory, STATE_FILE), state)
        for name in os.listdir(self.directory):
            if name.endswith(".weights.h5") and name != weights:
                os.remove(os.path.join(self.directory, name))


def restore_checkpoint(model, directory):
    """Loads the checkpoint in `directory` into `model` (weights and optimizer state).

    The model must be compiled. Returns the checkpoint's state (`epoch`,
    `step`, `optimizer_steps`, `history`), or None when there is none.
    """
    state_path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(state_path):
        return None
    way_out = (
        f"The checkpoint in {directory!r} is damaged: delete that folder (or pass --overwrite, "
        "overwrite=True) to start the run over."
    )
    state = read_checkpoint_state(state_path, way_out)
    weights_path = os.path.join(directory, state["weights"])
    if not os.path.isfile(weights_path):
        raise ValueError(f"The weights file {weights_path!r} named by {state_path!r} is missing. {way_out}")
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(weights_path)
    except ValueError as error:
        raise ValueError(
            f"The checkpoint in {directory!r} does not fit this model ({error}). It was written by a run "
            "with another model or settings: use a new output directory, or delete that checkpoint folder."
        ) from error
    except (OSError, KeyError, TypeError) as error:  # h5py: truncated or not an HDF5 file
        raise ValueError(f"The weights file {weights_path!r} cannot be read ({error}). {way_out}") from None
    return state


def read_checkpoint_state(path, way_out):
    """Reads and checks a `checkpoint.json`: the fields `TrainingCheckpoint.save` writes, with a
    weights file name of its own making (never a path out of the checkpoint folder)."""
    state = read_json(path, "The checkpoint record", way_out)
    problems = []
    if not isinstance(state, dict):
        raise ValueError(f"The checkpoint record {path!r} holds {type(state).__name__}, not an object. {way_out}")
    for key in ("epoch", "step", "optimizer_steps"):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{key!r} must be an int >= 0, got {value!r}")
    weights = state.get("weights")
    if not isinstance(weights, str) or not _WEIGHTS_NAME.match(weights):
        problems.append(f"'weights' must name a file checkpoint-<steps>.weights.h5 in the same folder, got {weights!r}")
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(logs, dict) for logs in history):
        problems.append("'history' must be a list of per-epoch logs")
    if problems:
        raise ValueError(f"The checkpoint record {path!r} is not valid: {'; '.join(problems)}. {way_out}")
    return state


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` naming the epoch and step where the loss stopped being finite.

    Raising (instead of setting `stop_training`) ends `fit` before the epoch-end
    callbacks run, so no checkpoint of the broken weights is written. Put it
    before `TrainingCheckpoint` in the callback list. The check sees the loss
    every `steps_per_execution` steps.
    """

    def __init__(self, checkpoint_directory=None):
        super().__init__()
        self.checkpoint_directory = checkpoint_directory
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(np.asarray(loss))):
            return
        kept = ""
        state_path = os.path.join(self.checkpoint_directory or "", STATE_FILE)
        if self.checkpoint_directory and os.path.exists(state_path):
            state = read_checkpoint_state(state_path, "")
            kept = (
                f" The last good checkpoint ({state['epoch']} epochs + {state['step']} steps) is kept in "
                f"{self.checkpoint_directory!r}; the same command resumes from it."
            )
        raise NonFiniteLossError(
            f"The training loss became {float(np.asarray(loss))} at epoch {self._epoch + 1}, step {batch + 1} "
            f"(optimizer step {optimizer_steps(self.model)}).{kept} Lower the learning rate, "
            "raise the warmup or the gradient clipping, or check the input data for NaN values."
        )
