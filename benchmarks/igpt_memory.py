"""Peak memory of one iGPT training step at 32, 48 and 64 px: dense vs block-wise attention.

An iGPT reads one token per pixel: 1024, 2304 and 4096 tokens at 32x32, 48x48
and 64x64. Dense attention keeps a `(batch, heads, T, T)` float32 score matrix
per layer (and its probabilities for the backward pass); block-wise attention
(`keras_vit.layers.blockwise_attention`, FlashAttention's custom-gradient
backward) keeps `O(T)` per layer. Remat recomputes each transformer block in
the backward pass, so that only the block inputs are kept between the forward
and the backward pass: `--remat on` is the model's `remat=True`
(`TransformerBlock(remat=True)`, `keras.remat` around the block since commit
8919e7a; before it, `keras.RematScope` failed on JAX and TensorFlow);
`--remat wrap` does the same from outside the library (`_remat_blocks`), so
that older trees can be measured. Under JAX on CPU neither changes the memory:
XLA:CPU's pipeline expands the `optimization_barrier`s of `jax.checkpoint`
before its late CSE pass, which merges the recomputation back into the forward
pass. TensorFlow (`tf.recompute_grad`, with and without XLA) does recompute.

The model is `igpt_s` width (hidden 512, 8 heads, MLP 2048, vocabulary 513,
untied 512-color head) with `--depth` layers; one training step is
`model.compile(optimizer="adamw",
loss=SparseCategoricalCrossentropy(from_logits=True))` and
`model.train_on_batch(x, y)`: forward, backward and the AdamW update, batch
`--batch` (1), float32, random weights and random tokens (`x` = start id then
the first T - 1 pixels, `y` = the T pixels). What is measured, each in a fresh
subprocess:

* **JAX, XLA analysis** (nothing runs): the step Keras jits,
  `jax.jit(model.train_step, donate_argnums=0)`, lowered and compiled for the
  model's state and the batch; `compiled.memory_analysis()` gives `temp`
  (intermediate buffers alive at once: activations, scores, gradients,
  optimizer temporaries) and `args` (weights, AdamW moments, batch). "XLA
  total" = args + temp + output - aliased output (the state is donated, so
  the updated state reuses its buffers).
* **process peak** (JAX and TensorFlow): `resource.getrusage(RUSAGE_SELF)
  .ru_maxrss` of a subprocess that builds the model, compiles it and runs the
  steps, minus that of a baseline subprocess that only imports the backend,
  builds the same model and makes the batch. It includes the AdamW moments
  and gradients, the step's activations and the compiler's own memory
  (JAX: XLA; TensorFlow: tracing, and XLA with `jit_compile=True`).
* **2nd-step peak** (`--steps 2`, off by default): the rise of the resident
  memory (VmHWM, reset through `/proc/self/clear_refs`) during a second
  `train_on_batch`, above the resident memory just before it. The workers run
  with `MALLOC_MMAP_THRESHOLD_=131072` so that freed buffers go back to the
  system, yet on JAX this read anything from 22 MiB to the full step for the
  same configuration (buffers of the first step still held or being freed),
  so the tables use the process peak.

TensorFlow runs with `jit_compile=False` (a `tf.function` graph, Keras' choice
on a CPU-only machine) and `jit_compile=True` (XLA). `--tf-parallel-iterations N`
(diagnostic) makes every `tf.while_loop` run at most N iterations at once
(TensorFlow's default is 10): without XLA, the default makes each block-wise
attention call hold several hundred MiB from its forward to its backward pass
(see RESULTS.md).

Safety: a configuration whose estimated peak exceeds `--limit-gib` is not run;
its expected score-matrix bytes are reported instead ("not run"). The estimate
is the JAX XLA total of the same configuration when it was analysed, else
`--scores-kept` float32 `(batch, heads, T, T)` matrices per layer (one layer
under remat) plus a linear term. The parent also kills a worker whose resident
memory passes `--limit-gib` or when the machine's available memory falls below
1.5 GiB.

Usage:

    python benchmarks/igpt_memory.py                                # depth 4 grid + the 64 px goal runs
    python benchmarks/igpt_memory.py --backends jax --sizes 64 --depth 4 --variants blockwise --remat wrap
    python benchmarks/igpt_memory.py --no-grid --goal-depth 24      # only the full-depth 64 px runs
    python benchmarks/igpt_memory.py --backends jax --analysis-only  # XLA's plan only, nothing runs
"""

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

MIB = 2**20
GIB = 2**30
WIDTH, HEADS, MLP_RATIO, PALETTE = 512, 8, 4, 512  # igpt_s


# --------------------------------------------------------------------------- worker (one fresh process)


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only).")


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _ru_maxrss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _build(config):
    import keras
    import numpy as np

    import keras_vit

    keras.utils.set_random_seed(0)
    model = keras_vit.create_model(
        "igpt_s",
        image_size=config["size"],
        depth=config["depth"],
        attention_implementation=config["implementation"],
        block_size=config["block_size"],
        remat=config["remat"] == "on",
    )
    if config["remat"] == "wrap":
        _remat_blocks(model)
    tokens = config["size"] ** 2
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, PALETTE, (config["batch"], tokens)).astype("int32")
    x = np.concatenate([np.full((config["batch"], 1), PALETTE, "int32"), pixels[:, :-1]], axis=1)
    return model, x, pixels


def _remat_blocks(model):
    """Per-block rematerialization from outside the model: each block's call, with its
    non-tensor arguments closed over, goes through `keras.remat` (jax.checkpoint,
    tf.recompute_grad, torch checkpoint). The same as `remat=True` since commit 8919e7a;
    before it, `keras.RematScope` traced `training=` as an array and failed."""
    import keras

    for layer in model.layers:
        if not layer.name.startswith("block"):
            continue

        def call(inputs, training=False, cache=None, cache_index=None, _call=layer.call, **kwargs):
            if cache is not None or kwargs:  # generation: nothing to recompute
                return _call(inputs, training=training, cache=cache, cache_index=cache_index, **kwargs)
            return keras.remat(lambda x: _call(x, training=training))(inputs)

        layer.call = call


def _set_tf_parallel_iterations(count):
    """Diagnostic: every `tf.while_loop` (Keras' `fori_loop` / `while_loop` on TensorFlow)
    runs at most `count` iterations at once (TensorFlow's default is 10)."""
    import tensorflow as tf

    original = tf.while_loop

    def while_loop(*args, **kwargs):
        kwargs["parallel_iterations"] = count
        return original(*args, **kwargs)

    tf.while_loop = while_loop


def _compile(model, jit_compile):
    import keras

    model.compile(
        optimizer="adamw",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def measure_one(config):
    """One record for `config` (a dict, see `configs`), in this fresh process."""
    import keras

    backend = keras.backend.backend()
    if backend != config["backend"]:
        raise ValueError(f"worker runs {backend!r}, the config asks for {config['backend']!r}: set KERAS_BACKEND.")
    if config.get("tf_parallel_iterations") and backend == "tensorflow":
        _set_tf_parallel_iterations(config["tf_parallel_iterations"])
    record = dict(config)
    model, x, y = _build(config)
    record["params"] = model.count_params()
    if config["mode"] == "baseline":
        record["ru_maxrss_mib"] = _ru_maxrss_bytes() / MIB
        return record
    if config["mode"] == "analysis":
        import jax

        _compile(model, jit_compile=True)
        model._symbolic_build(data_batch=(x, y, None))  # builds the optimizer and metric variables, as train_on_batch does
        state = model._get_jax_state(
            trainable_variables=True, non_trainable_variables=True, optimizer_variables=True, metrics_variables=True
        )
        start = time.perf_counter()
        compiled = jax.jit(model.train_step, donate_argnums=0).lower(state, (x, y, None)).compile()
        record["compile_s"] = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        record["xla_temp_mib"] = analysis.temp_size_in_bytes / MIB
        record["xla_args_mib"] = analysis.argument_size_in_bytes / MIB
        record["xla_output_mib"] = analysis.output_size_in_bytes / MIB
        record["xla_alias_mib"] = analysis.alias_size_in_bytes / MIB
        record["xla_total_mib"] = (
            analysis.argument_size_in_bytes
            + analysis.temp_size_in_bytes
            + analysis.output_size_in_bytes
            - analysis.alias_size_in_bytes
        ) / MIB
        record["ru_maxrss_mib"] = _ru_maxrss_bytes() / MIB
        return record
    # mode == "run": compile + first step, then a second step on its own.
    _compile(model, jit_compile=config["jit_compile"])
    start = time.perf_counter()
    loss = model.train_on_batch(x, y)
    record["first_step_s"] = time.perf_counter() - start
    record["loss"] = float(loss if not isinstance(loss, (list, tuple)) else loss[0])
    record["ru_maxrss_mib"] = _ru_maxrss_bytes() / MIB
    if config["steps"] > 1:
        _reset_peak_rss()
        before = _status_bytes("VmRSS")
        start = time.perf_counter()
        model.train_on_batch(x, y)
        record["step_s"] = time.perf_counter() - start
        record["second_step_peak_mib"] = (_status_bytes("VmHWM") - before) / MIB
        record["ru_maxrss_mib"] = _ru_maxrss_bytes() / MIB
    return record


# --------------------------------------------------------------------------- parent


def score_bytes(config):
    """Bytes of one float32 `(batch, heads, T, T)` score matrix: what dense attention holds per layer."""
    tokens = config["size"] ** 2
    return config["batch"] * HEADS * tokens * tokens * 4


def param_count(size, depth):
    """igpt_s-width parameters (transformers' layout, with biases) at `depth` layers and `size` px."""
    per_block = 2 * WIDTH + 3 * WIDTH * WIDTH + 3 * WIDTH + WIDTH * WIDTH + WIDTH  # norms, qkv, projection
    per_block += 2 * WIDTH * MLP_RATIO * WIDTH + MLP_RATIO * WIDTH + WIDTH  # MLP
    return depth * per_block + (PALETTE + 1) * WIDTH + size**2 * WIDTH + WIDTH + WIDTH * PALETTE


def estimate_bytes(config, scores_kept):
    """A rough upper estimate of the step's peak, to decide whether to run it.

    Weights, gradients and AdamW moments (4 copies of the parameters), about
    40 `(batch, T, width)` float32 activations per layer kept for the backward
    pass (one layer under remat), and for dense attention `scores_kept` score
    matrices per layer (one layer under remat, plus the kept ones' inputs).
    """
    tokens, depth = config["size"] ** 2, config["depth"]
    # XLA:CPU under JAX merges the recomputation back into the forward pass (TensorFlow's XLA keeps it).
    remat_works = config["remat"] != "off" and config["backend"] != "jax"
    kept_layers = 1 if remat_works else depth
    total = 4 * 4 * param_count(config["size"], depth)
    total += 40 * config["batch"] * tokens * WIDTH * 4 * kept_layers
    if config["implementation"] in ("dense", "fused"):
        total += scores_kept * score_bytes(config) * kept_layers
    return total


def _memory_available():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _child_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def run_worker(config, limit_bytes, timeout_s):
    """Runs `config` in a fresh process under the watchdog; returns its record (or one saying why not)."""
    env = dict(
        os.environ,
        KERAS_BACKEND=config["backend"],
        TF_CPP_MIN_LOG_LEVEL="3",
        MALLOC_MMAP_THRESHOLD_="131072",
    )
    command = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []
    peak_seen = [0]

    def watchdog():
        start = time.time()
        while process.poll() is None:
            rss = _child_rss(process.pid)
            peak_seen[0] = max(peak_seen[0], rss)
            available = _memory_available()
            reason = None
            if rss > limit_bytes:
                reason = f"resident memory {rss / GIB:.1f} GiB passed the {limit_bytes / GIB:.0f} GiB limit"
            elif available is not None and available < 1.5 * GIB:
                reason = f"the machine had {available / GIB:.1f} GiB available"
            elif time.time() - start > timeout_s:
                reason = f"ran past {timeout_s} s"
            if reason:
                killed.append(reason)
                process.kill()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    stdout, stderr = process.communicate()
    thread.join()
    if killed:
        return dict(config, status="killed", reason=killed[0], watchdog_peak_mib=peak_seen[0] / MIB)
    if process.returncode:
        return dict(config, status="failed", reason=stderr.strip().splitlines()[-1] if stderr.strip() else "?",
                    stderr_tail=stderr[-3000:])
    record = json.loads(stdout.strip().splitlines()[-1])
    record["status"] = "ok"
    record["watchdog_peak_mib"] = peak_seen[0] / MIB
    return record


def configs(args):
    """The measurements, in order: per backend the depth grid, then the goal runs at 64 px."""
    runs = []

    def add(backend, size, depth, implementation, remat, mode, jit_compile=None, goal=False):
        runs.append(dict(backend=backend, size=size, depth=depth, implementation=implementation, remat=remat,
                         mode=mode, jit_compile=jit_compile, batch=args.batch, block_size=args.block_size,
                         steps=args.steps, goal=goal, tf_parallel_iterations=args.tf_parallel_iterations))

    for backend in args.backends:
        jit_modes = [True] if backend == "jax" else args.tf_jit
        shapes = []
        if args.grid:
            shapes += [(size, args.depth, impl, remat, False) for size in args.sizes for impl in args.variants
                       for remat in args.remat]
        if args.goal_depth:
            shapes += [(64, args.goal_depth, impl, remat, True) for impl in args.variants for remat in args.remat]
        for size, depth in dict.fromkeys((s, d) for s, d, *_ in shapes):
            if backend == "jax" and args.analysis_only:
                break
            add(backend, size, depth, "dense", "off", "baseline")
        for size, depth, impl, remat, goal in shapes:
            if backend == "jax" and args.analysis:
                add(backend, size, depth, impl, remat, "analysis", True, goal)
            for jit_compile in ([] if backend == "jax" and args.analysis_only else jit_modes):
                add(backend, size, depth, impl, remat, "run", jit_compile, goal)
    return runs


def main_parent(args):
    limit = args.limit_gib * GIB
    records, baselines, analysed = [], {}, {}
    for config in configs(args):
        label = (f"{config['backend']:10} {config['mode']:8} {config['size']}px depth {config['depth']:2} "
                 f"{config['implementation']:9} remat={config['remat']:4} jit={config['jit_compile']}")
        if config["mode"] == "run":
            key = (config["size"], config["depth"], config["implementation"], config["remat"], config["batch"])
            xla = analysed.get(key)
            estimate = estimate_bytes(config, args.scores_kept)
            if xla and (config["backend"] == "jax" or config["remat"] == "off"):
                # XLA's plan of the same step; TensorFlow honours remat where XLA on CPU does not (see the docstring).
                estimate = xla * MIB * 1.3 if config["backend"] == "jax" else max(estimate, xla * MIB * 1.3)
            if estimate > limit:
                record = dict(config, status="not run", estimate_mib=estimate / MIB,
                              reason=f"estimated {estimate / GIB:.1f} GiB > {args.limit_gib:g} GiB")
                record["score_matrix_mib"] = score_bytes(config) / MIB
                record["score_matrices_all_layers_mib"] = score_bytes(config) * config["depth"] / MIB
                print(f"{label}: not run ({record['reason']})", file=sys.stderr, flush=True)
                records.append(record)
                if args.json:
                    with open(args.json, "a") as file:
                        file.write(json.dumps(record) + "\n")
                continue
        start = time.time()
        record = run_worker(config, limit, args.timeout)
        record["wall_s"] = round(time.time() - start, 1)
        record["score_matrix_mib"] = score_bytes(config) / MIB
        if record["status"] == "ok":
            if config["mode"] == "baseline":
                baselines[(config["backend"], config["size"], config["depth"])] = record["ru_maxrss_mib"]
            elif config["mode"] == "analysis":
                analysed[(config["size"], config["depth"], config["implementation"], config["remat"], config["batch"])] = (
                    record["xla_total_mib"])
            else:
                base = baselines.get((config["backend"], config["size"], config["depth"]))
                record["baseline_mib"] = base
                record["process_peak_mib"] = record["ru_maxrss_mib"] - base if base is not None else None
        print(f"{label}: {_summary(record)} ({record['wall_s']} s)", file=sys.stderr, flush=True)
        records.append(record)
        if args.json:
            with open(args.json, "a") as file:
                file.write(json.dumps(record) + "\n")
    return records


def _summary(record):
    if record["status"] != "ok":
        return f"{record['status']}: {record.get('reason')}"
    if record["mode"] == "baseline":
        return f"ru_maxrss {record['ru_maxrss_mib']:.0f} MiB"
    if record["mode"] == "analysis":
        return f"XLA temp {record['xla_temp_mib']:.0f} MiB, args {record['xla_args_mib']:.0f}, total {record['xla_total_mib']:.0f}"
    second = record.get("second_step_peak_mib")
    return (f"process peak {record['process_peak_mib']:.0f} MiB"
            + (f", 2nd step {second:.0f} MiB" if second is not None else "")
            + f", loss {record['loss']:.3f}, first step {record['first_step_s']:.1f} s")


def _fmt(value, digits=0):
    return "" if value is None else f"{value:,.{digits}f}"


def markdown(records):
    """One row per (size, depth, attention, remat): XLA analysis and the measured peaks per backend."""
    rows = {}
    for record in records:
        if record["mode"] == "baseline":
            continue
        key = (record["depth"], record["size"], record["implementation"], record["remat"])
        row = rows.setdefault(key, {})
        if record["status"] == "not run":
            column = "xla" if record["mode"] == "analysis" else f"{record['backend']}:{record['jit_compile']}"
            row[column] = f"not run (scores {record['score_matrices_all_layers_mib'] / 1024:.1f} GiB)"
            continue
        if record["status"] != "ok":
            column = "xla" if record["mode"] == "analysis" else f"{record['backend']}:{record['jit_compile']}"
            row[column] = record["status"]
            continue
        if record["mode"] == "analysis":
            row["xla"] = f"{_fmt(record['xla_temp_mib'])} / {_fmt(record['xla_total_mib'])}"
        else:
            cell = _fmt(record["process_peak_mib"])
            if record.get("second_step_peak_mib") is not None:
                cell += f" ({_fmt(record['second_step_peak_mib'])})"
            row[f"{record['backend']}:{record['jit_compile']}"] = cell
    columns = [("xla", "JAX XLA temp / total MiB"), ("jax:True", "JAX process peak MiB"),
               ("tensorflow:False", "TF graph process peak MiB"), ("tensorflow:True", "TF XLA process peak MiB")]
    present = [c for c in columns if any(c[0] in row for row in rows.values())]
    lines = ["| depth | image | tokens | attention | remat | scores/layer MiB | " + " | ".join(c[1] for c in present) + " |",
             "|---:|---:|---:|---|---|---:|" + "---:|" * len(present)]
    for (depth, size, impl, remat), row in rows.items():
        scores = 8 * size**4 * 4 / MIB
        lines.append(f"| {depth} | {size} | {size * size} | {impl} | {remat} | {scores:,.0f} | "
                     + " | ".join(row.get(c[0], "") for c in present) + " |")
    return "\n".join(lines)


def environment():
    versions = {}
    for name in ("keras", "jax", "jaxlib", "tensorflow", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    total = None
    with open("/proc/meminfo") as meminfo:
        total = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1]) / 2**20
    try:
        commit = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = None
    return dict(python=platform.python_version(), cpu=cpu, cores=len(os.sched_getaffinity(0)),
                memory_gib=round(total, 1), commit=commit, date=time.strftime("%Y-%m-%d"), **versions)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow")
    parser.add_argument("--sizes", default="32,48,64", help="image sides of the grid")
    parser.add_argument("--depth", type=int, default=4, help="layers of the grid's models")
    parser.add_argument("--goal-depth", type=int, default=24, help="layers of the 64 px goal runs (0: none)")
    parser.add_argument("--no-grid", dest="grid", action="store_false", help="only the goal runs")
    parser.add_argument("--variants", default="dense,blockwise", help="attention implementations")
    parser.add_argument("--remat", default="off,on",
                        help="off; on (the model's remat=True); wrap (each block's call through keras.remat "
                             "from outside the model, as remat=True does since 8919e7a)")
    parser.add_argument("--tf-jit", default="off,on", help="TensorFlow jit_compile settings")
    parser.add_argument("--no-analysis", dest="analysis", action="store_false", help="skip the JAX XLA analysis")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1, help="1: first step only; 2: also the 2nd-step peak")
    parser.add_argument("--tf-parallel-iterations", type=int,
                        help="diagnostic: parallel_iterations of every tf.while_loop (TensorFlow's default: 10)")
    parser.add_argument("--analysis-only", action="store_true", help="JAX: the XLA analysis, no run")
    parser.add_argument("--limit-gib", type=float, default=20.0, help="do not run (and kill) above this")
    parser.add_argument("--scores-kept", type=float, default=3.0,
                        help="score matrices per layer the estimate assumes for dense attention")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per worker")
    parser.add_argument("--json", help="append one JSON record per line to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: a JSON config, measured in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(json.loads(args.one))))
        return
    on_off = {"on": True, "off": False, "true": True, "false": False}
    args.backends = args.backends.split(",")
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.variants = args.variants.split(",")
    args.remat = args.remat.split(",")
    args.tf_jit = [on_off[value] for value in args.tf_jit.split(",")]
    env = environment()
    print(json.dumps(env), file=sys.stderr)
    records = main_parent(args)
    print(markdown(records))


if __name__ == "__main__":
    main()
