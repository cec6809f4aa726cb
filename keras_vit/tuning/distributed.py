"""KerasTuner's chief/worker mode, made to survive a worker that dies.

- `role()`: this process's part, from KerasTuner's environment variables
  (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`).
- `send_heartbeats`: a worker pings the chief (a `GetTrial` call) every few
  seconds while it trains.
- `serve_oracle`: the chief's gRPC server (KerasTuner's own servicer) with a
  watchdog: a trial whose worker stopped pinging for `heartbeat_timeout`
  seconds is ended as INVALID, so KerasTuner retries it on another worker
  (`max_retries_per_trial`) or marks it FAILED, and the chief no longer waits
  for that worker to finish the search.
"""

import os
import sys
import time

ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"


def role():
    """The process's part in the search, from KerasTuner's environment variables: chief, worker or local."""
    from keras_tuner.src.distribute import utils

    if not utils.has_chief_oracle():
        return "local"
    return "chief" if utils.is_chief_oracle() else "worker"


# ---- a worker --------------------------------------------------------------------------------


def send_heartbeats(oracle, trial_id, stop, interval):
    """Asks the chief's `oracle` for `trial_id` every `interval` seconds until `stop` (an Event) is set."""
    while not stop.wait(interval):
        try:
            oracle.get_trial(trial_id)
        except Exception:  # the chief may be restarting; the next beat retries
            pass


# ---- the chief -------------------------------------------------------------------------------


def serve_oracle(oracle, heartbeat_timeout):
    """KerasTuner's chief server (oracle_chief.start_server) plus a watchdog for silent workers.

    Runs until a worker was told the search is over and no trial and no worker is left."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    class Servicer(oracle_chief.OracleServicer):
        def __init__(self, oracle):
            super().__init__(oracle)
            self.last_seen = {}

        def CreateTrial(self, request, context):
            response = super().CreateTrial(request, context)
            self.last_seen[response.trial.trial_id] = time.time()
            return response

        def UpdateTrial(self, request, context):
            self.last_seen[request.trial_id] = time.time()
            return super().UpdateTrial(request, context)

        def GetTrial(self, request, context):
            self.last_seen[request.trial_id] = time.time()
            return super().GetTrial(request, context)

    servicer = Servicer(oracle)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ[ENV_ORACLE_IP]}:{os.environ[ENV_ORACLE_PORT]}"
    warning = all_interfaces_warning(os.environ[ENV_ORACLE_IP])
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if not server.add_insecure_port(address):
        raise ValueError(f"The chief cannot listen on {address}: is the port taken? Pick another --oracle-address.")
    server.start()
    print(f"Chief oracle listening on {address}", flush=True)
    try:
        while True:
            time.sleep(0.5)
            requeue_silent_trials(oracle, servicer.last_seen, heartbeat_timeout)
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                break
    finally:
        server.stop(grace=2)


def all_interfaces_warning(host):
    """A one-line warning when the chief's `host` is a wildcard address (every interface), else None."""
    if host.strip("[]") in ("0.0.0.0", "::", ""):
        return (
            f"warning: the chief listens on all interfaces ({host}) without authentication or encryption: anyone "
            "who can reach this port can read and steer the search. Prefer this machine's private address."
        )
    return None


def requeue_silent_trials(oracle, last_seen, timeout):
    """Ends as INVALID each ongoing trial not seen for `timeout` seconds (`last_seen`: trial id -> time)."""
    from keras_tuner.src.engine import oracle as oracle_module
    from keras_tuner.src.engine import trial as trial_module

    now = time.time()
    silent = [
        (tuner_id, trial) for tuner_id, trial in list(oracle.ongoing_trials.items())
        if now - last_seen.setdefault(trial.trial_id, now) > timeout
    ]
    for tuner_id, trial in silent:
        message = (f"Worker {tuner_id!r} sent no heartbeat for {now - last_seen[trial.trial_id]:.0f} s "
                   f"(timeout {timeout:g} s) while running trial {trial.trial_id}; giving the trial back.")
        print(message, file=sys.stderr, flush=True)

        def end(oracle, trial=trial, tuner_id=tuner_id, message=message):
            if oracle.ongoing_trials.get(tuner_id) is not trial:
                return  # the worker reported in the meantime
            trial.status = trial_module.TrialStatus.INVALID
            trial.message = message
            oracle.tuner_ids.discard(tuner_id)
            oracle.end_trial(trial)

        try:
            oracle_module.synchronized(end)(oracle)
        except RuntimeError as error:  # too many consecutive failures: KerasTuner stops the search
            print(f"Stopping the search: {error}", file=sys.stderr, flush=True)
            oracle.ongoing_trials.clear()
            oracle.tuner_ids.clear()
        last_seen.pop(trial.trial_id, None)
