"""Train a DDPM (denoising diffusion) on scikit-learn's 8x8 digits, end to end.

A small UNet (conv, GroupNorm, SiLU, residual blocks, stride-2 downsampling, nearest
upsampling, self-attention at the lowest resolution, sinusoidal time embedding) learns to
predict the noise added to a digit. AdamW with a warmup-cosine schedule and global-norm
clipping trains it; an EMA of the parameters samples, through one jitted ``lax.fori_loop``
over the reverse steps. The run writes a PNG grid of samples, a PNG of the loss curve,
periodic checkpoints (``--resume`` continues from the last one), and judges the samples
with the MLP classifier of train_mlp.py beside real held-out digits.

Defaults finish in a few minutes on a 2-core CPU:

    python examples/train_diffusion.py --out runs/diffusion

A longer run on a GPU (16x16 images, wider UNet):

    python examples/train_diffusion.py --image_size 16 --channels 64 --batch_size 256 \
        --steps 4000 --timesteps 1000 --out runs/diffusion_gpu
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time

import numpy as np
from absl import app, flags

import flamefx
import flamefx.numpy as fnp
from flamefx import lax, nn, optim, random

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train_mlp beside us
import train_mlp

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 500, "Training steps.")
flags.DEFINE_integer("batch_size", 32, "Images per step.")
flags.DEFINE_integer("channels", 16, "UNet width at the top resolution.")
flags.DEFINE_integer("image_size", 8, "8 (the digits as they are) or 16 (upsampled).")
flags.DEFINE_integer("timesteps", 200, "Diffusion steps (forward noising and sampling).")
flags.DEFINE_float("learning_rate", 2e-3, "Peak AdamW learning rate.")
flags.DEFINE_integer("warmup_steps", 50, "Linear warmup before the cosine decay.")
flags.DEFINE_float("ema_decay", 0.995, "Decay of the parameter EMA used for sampling.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Compute dtype of the UNet (parameters and optimizer stay float32).")
flags.DEFINE_integer("num_samples", 64, "Images to sample at the end.")
flags.DEFINE_integer("checkpoint_every", 200, "Steps between checkpoints.")
flags.DEFINE_integer("log_every", 25, "Steps between progress lines.")
flags.DEFINE_float("time_budget_s", 0.0, "Stop training after this many seconds (0: none); "
                   "the run then checkpoints, samples and judges as usual.")
flags.DEFINE_boolean("resume", False, "Continue from the checkpoint in --out.")
flags.DEFINE_string("judge", "runs/mlp/mlp_params.safetensors",
                    "MLP classifier parameters (trained with train_mlp.py when missing).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("out", "runs/diffusion", "Directory for checkpoints and PNGs.")

CHECKPOINT = "checkpoint.safetensors"
LOSS_HISTORY = "losses.json"


# --- data ---------------------------------------------------------------------------------


def digit_images(image_size: int, seed: int = 0):
    """Train/held-out digits (same split as train_mlp) as (N, 1, S, S) float32 in [-1, 1]."""
    (x_train, _), (x_test, y_test) = train_mlp.load_digits_split(seed)

    def prepare(images):
        images = images[:, None] * 2.0 - 1.0
        if image_size == 16:  # bilinear 2x: smoother strokes than repeating pixels
            images = np.asarray(nn.upsample_bilinear(fnp.asarray(images), scale=2))
        elif image_size != 8:
            raise ValueError(f"--image_size must be 8 or 16, got {image_size}")
        return images.astype(np.float32)

    return prepare(x_train), (prepare(x_test), y_test)


# --- the noise schedule -------------------------------------------------------------------


def cosine_schedule(timesteps: int) -> dict:
    """Betas of the cosine schedule (Nichol & Dhariwal) and the constants sampling needs.

    Cosine rather than linear betas because it stays well-behaved with a few hundred steps.
    """
    s = 0.008
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    alpha_bar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 1e-5, 0.999)
    alphas = 1.0 - betas
    alpha_bar = np.cumprod(alphas)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    posterior_var = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
    table = {
        "sqrt_alpha_bar": np.sqrt(alpha_bar),
        "sqrt_one_minus_alpha_bar": np.sqrt(1 - alpha_bar),
        # q(x_{t-1} | x_t, x0) = N(coef_x0 * x0 + coef_xt * x_t, posterior_var)
        "coef_x0": betas * np.sqrt(alpha_bar_prev) / (1 - alpha_bar),
        "coef_xt": (1 - alpha_bar_prev) * np.sqrt(alphas) / (1 - alpha_bar),
        "posterior_std": np.sqrt(posterior_var),
    }
    return {name: fnp.asarray(value.astype(np.float32)) for name, value in table.items()}


# --- the UNet -----------------------------------------------------------------------------


def _groups(channels: int) -> int:
    return min(8, channels)


def init_res_block(key, in_channels: int, out_channels: int, time_features: int) -> dict:
    keys = random.split(key, 4)
    block = {
        "norm1": nn.GroupNorm.init(in_channels, _groups(in_channels)),
        "conv1": nn.Conv2d.init(keys[0], in_channels, out_channels, 3),
        "time": nn.Linear.init(keys[1], time_features, out_channels),
        "norm2": nn.GroupNorm.init(out_channels, _groups(out_channels)),
        # Zero-initialized last conv: each block starts as the identity (stable early steps).
        "conv2": nn.Conv2d.init(keys[2], out_channels, out_channels, 3,
                                weight_init=nn.initializers.zeros),
    }
    if in_channels != out_channels:
        block["skip"] = nn.Conv2d.init(keys[3], in_channels, out_channels, 1)
    return block


def res_block(block: dict, x, time_embedding):
    h = block["conv1"](nn.silu(block["norm1"](x)))
    h = h + block["time"](time_embedding)[:, :, None, None]
    h = block["conv2"](nn.silu(block["norm2"](h)))
    return (block["skip"](x) if "skip" in block else x) + h


def init_attention_block(key, channels: int) -> dict:
    return {"norm": nn.GroupNorm.init(channels, _groups(channels)),
            "attention": nn.Attention.init(key, channels, num_heads=4)}


def attention_block(block: dict, x):
    """Self-attention over the H*W spatial positions as tokens, residual."""
    batch, channels, height, width = x.shape
    tokens = fnp.transpose(block["norm"](x).reshape(batch, channels, height * width),
                           (0, 2, 1))
    attended = fnp.transpose(block["attention"](tokens), (0, 2, 1))
    return x + attended.reshape(batch, channels, height, width)


def timestep_embedding(t, features: int):
    """Sinusoidal embedding of integer timesteps ``t`` (batch,) -> (batch, features)."""
    half = features // 2
    frequencies = fnp.exp(-math.log(10_000.0) * fnp.arange(half, dtype=fnp.float32) / half)
    angles = t.astype(fnp.float32)[:, None] * frequencies[None, :]
    return fnp.concatenate([fnp.sin(angles), fnp.cos(angles)], axis=-1)


def init_unet(key, channels: int, image_size: int) -> dict:
    """Parameters of the UNet: one level per resolution down to 4x4, attention at 4x4.

    Level widths double once (8x8 input: 8 -> 4; 16x16 input: 16 -> 8 -> 4).
    """
    widths = [channels, 2 * channels] if image_size == 8 else [channels, 2 * channels,
                                                                2 * channels]
    time_features = 4 * channels
    keys = iter(random.split(key, 8 + 4 * len(widths)))
    params = {
        "time_mlp": [nn.Linear.init(next(keys), channels, time_features),
                     nn.Linear.init(next(keys), time_features, time_features)],
        "stem": nn.Conv2d.init(next(keys), 1, widths[0], 3),
        "down": [], "up": [],
    }
    for level, width in enumerate(widths):
        in_width = widths[level - 1] if level else widths[0]
        params["down"].append({
            "downsample": (nn.Conv2d.init(next(keys), in_width, width, 3, stride=2)
                           if level else None),
            "block": init_res_block(next(keys), width, width, time_features)})
    params["middle"] = {
        "block1": init_res_block(next(keys), widths[-1], widths[-1], time_features),
        "attention": init_attention_block(next(keys), widths[-1]),
        "block2": init_res_block(next(keys), widths[-1], widths[-1], time_features)}
    for level in reversed(range(len(widths))):
        out_width = widths[level - 1] if level else widths[0]
        params["up"].append({
            # Concatenated with the skip of the same level, hence twice the width in.
            "block": init_res_block(next(keys), 2 * widths[level], widths[level],
                                    time_features),
            "upsample": (nn.Conv2d.init(next(keys), widths[level], out_width, 3)
                         if level else None)})
    params["head"] = {"norm": nn.GroupNorm.init(widths[0], _groups(widths[0])),
                      "conv": nn.Conv2d.init(next(keys), widths[0], 1, 3,
                                             weight_init=nn.initializers.zeros)}
    return params


def unet(params: dict, x, t):
    """Predicted noise for noisy images ``x`` (N, 1, S, S) at integer timesteps ``t`` (N,)."""
    first = params["time_mlp"][0]
    embedding = timestep_embedding(t, first.weight.shape[0]).astype(x.dtype)
    embedding = params["time_mlp"][1](nn.silu(first(embedding)))
    h = params["stem"](x)
    skips = []
    for level in params["down"]:
        if level["downsample"] is not None:
            h = level["downsample"](h)
        h = res_block(level["block"], h, embedding)
        skips.append(h)
    h = res_block(params["middle"]["block1"], h, embedding)
    h = attention_block(params["middle"]["attention"], h)
    h = res_block(params["middle"]["block2"], h, embedding)
    for level in params["up"]:
        h = res_block(level["block"], fnp.concatenate([h, skips.pop()], axis=1), embedding)
        if level["upsample"] is not None:
            h = level["upsample"](nn.upsample_nearest(h, 2))
    head = params["head"]
    return head["conv"](nn.silu(head["norm"](h)))


# --- training -----------------------------------------------------------------------------


def diffusion_loss(params, schedule, images, t, noise, policy):
    """Mean squared error of the predicted noise (the DDPM "simple" objective). The UNet
    runs in ``policy.compute_dtype`` on a cast of the float32 master parameters; the
    gradient comes back through the cast in float32."""
    scale = fnp.take(schedule["sqrt_alpha_bar"], t)[:, None, None, None]
    sigma = fnp.take(schedule["sqrt_one_minus_alpha_bar"], t)[:, None, None, None]
    noisy = scale * images + sigma * noise
    predicted = unet(policy.cast_to_compute(params), policy.cast_to_compute(noisy), t)
    return fnp.mean(fnp.square(policy.cast_to_output(predicted) - noise))


def make_optimizer(learning_rate: float, warmup_steps: int, steps: int):
    schedule = optim.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                  max(steps, warmup_steps + 1),
                                                  end_value=learning_rate * 0.05)
    return optim.chain(optim.clip_by_global_norm(1.0),
                       optim.adamw(schedule, weight_decay=1e-4))


def make_update(optimizer, ema, schedule, policy):
    """``update(state, images, t, noise) -> (state, loss)``: one AdamW + EMA step on a batch
    whose timesteps and noise are given (not jitted: the train step below wraps it, and
    benchmarks/bench_model.py jits it to feed every framework the same noise)."""
    def update(state, images, t, noise):
        loss, grads = flamefx.value_and_grad(diffusion_loss)(
            state["params"], schedule, images, t, noise, policy)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optim.apply_updates(state["params"], updates)
        ema_params, ema_state = ema.update(params, state["ema_state"])
        return {"params": params, "opt_state": opt_state, "ema_state": ema_state,
                "ema_params": ema_params, "step": state["step"] + 1}, loss

    return update


def make_train_step(optimizer, ema, schedule, timesteps: int, policy, batch_size: int):
    """A jitted ``train_step(state, dataset, key) -> (state, loss)``. The batch, timesteps
    and noise come from ``fold_in(key, state['step'])`` inside the step, so the loop hands
    over the same (already on-device) dataset and key every step: no host work, no copy
    to the device, and a resumed run sees the same batches."""
    update = make_update(optimizer, ema, schedule, policy)

    @flamefx.jit
    def train_step(state, dataset, key):
        data_key, noise_key, time_key = random.split(random.fold_in(key, state["step"]), 3)
        images = fnp.take(dataset, random.randint(data_key, (batch_size,), 0, dataset.shape[0]),
                          axis=0)
        t = random.randint(time_key, (batch_size,), 0, timesteps)
        noise = random.normal(noise_key, images.shape)
        return update(state, images, t, noise)

    return train_step


def init_train_state(seed: int, channels: int, image_size: int, optimizer, ema) -> dict:
    params = init_unet(random.key(seed), channels, image_size)
    return {"params": params, "opt_state": optimizer.init(params),
            "ema_state": ema.init(params), "ema_params": params,
            "step": fnp.asarray(0, dtype=fnp.int32)}


def save_checkpoint(out: str, state: dict, losses: list) -> None:
    flamefx.save(os.path.join(out, CHECKPOINT), state)
    with open(os.path.join(out, LOSS_HISTORY), "w") as f:
        json.dump(losses, f)


def load_checkpoint(out: str, like: dict) -> tuple[dict, list]:
    state = flamefx.load(os.path.join(out, CHECKPOINT), like=like)
    history = os.path.join(out, LOSS_HISTORY)
    losses = []
    if os.path.exists(history):
        with open(history) as f:
            losses = [tuple(point) for point in json.load(f)]
    return state, losses


# --- sampling -----------------------------------------------------------------------------


def make_sampler(schedule, timesteps: int, policy):
    """A jitted ``sample(params, key, noise) -> images``: ancestral DDPM sampling, all
    reverse steps in one ``lax.fori_loop``; x0 is clipped to [-1, 1] at each step."""
    @flamefx.jit
    def sample(params, key, noise):
        params = policy.cast_to_compute(params)
        batch = noise.shape[0]

        def reverse_step(i, carry):
            x, key = carry
            key, noise_key = random.split(key)
            t = timesteps - 1 - i
            t_batch = fnp.full((batch,), t, dtype=fnp.int32)
            eps = policy.cast_to_output(unet(params, policy.cast_to_compute(x), t_batch))
            x0 = (x - schedule["sqrt_one_minus_alpha_bar"][t] * eps) / \
                schedule["sqrt_alpha_bar"][t]
            x0 = fnp.clip(x0, -1.0, 1.0)
            mean = schedule["coef_x0"][t] * x0 + schedule["coef_xt"][t] * x
            # posterior_std[0] is 0: the last step adds no noise.
            return mean + schedule["posterior_std"][t] * random.normal(noise_key, x.shape), key

        x, _ = lax.fori_loop(0, timesteps, reverse_step, (noise, key))
        return x

    return sample


# --- judging the samples ------------------------------------------------------------------


def judge(mlp_params, images) -> dict:
    """The classifier's view of ``images`` (N, 1, S, S) in [-1, 1]: share labelled with
    confidence >= 0.9, and the label histogram's entropy over log(10) (1 = all ten digits
    equally often)."""
    images = np.asarray(images, dtype=np.float32)[:, 0]
    if images.shape[-1] == 16:  # back to the classifier's 8x8 by 2x2 means
        images = images.reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4))
    images = np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    probs = np.asarray(nn.softmax(train_mlp.mlp_logits(mlp_params, fnp.asarray(images))))
    labels = probs.argmax(axis=-1)
    histogram = np.bincount(labels, minlength=10) / len(labels)
    nonzero = histogram[histogram > 0]
    return {"confident_share": float(np.mean(probs.max(axis=-1) >= 0.9)),
            "class_entropy": float(-(nonzero * np.log(nonzero)).sum() / math.log(10)) + 0.0,
            "histogram": np.bincount(labels, minlength=10).tolist()}


def load_judge(path: str, seed: int):
    if not os.path.exists(path):
        print(f"no classifier at {path}: training one with train_mlp.py (500 steps)")
        train_mlp.train(steps=500, batch_size=128, learning_rate=2e-3, hidden=256,
                        seed=seed, out=os.path.dirname(path) or ".")
    return flamefx.load(path)  # the layer sizes come from the file


# --- pictures -----------------------------------------------------------------------------


def write_png(path: str, pixels) -> None:
    """Writes a uint8 (H, W) grayscale array as a PNG with zlib alone (no Pillow needed)."""
    import struct
    import zlib
    height, width = pixels.shape
    rows = b"".join(b"\x00" + pixels[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def write_sample_grid(path: str, images, zoom: int = 4) -> None:
    """Writes (N, 1, S, S) images in [-1, 1] as a square grid PNG, 2-pixel gaps."""
    images = np.clip((np.asarray(images, np.float32)[:, 0] + 1.0) * 127.5, 0, 255)
    count, size = images.shape[0], images.shape[-1] * zoom
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (size + 2) + 2, columns * (size + 2) + 2), 64, np.uint8)
    for n, image in enumerate(images):
        r, c = divmod(n, columns)
        tile = np.kron(image, np.ones((zoom, zoom))).astype(np.uint8)
        grid[2 + r * (size + 2):2 + r * (size + 2) + size,
             2 + c * (size + 2):2 + c * (size + 2) + size] = tile
    write_png(path, grid)


def write_loss_plot(path: str, losses, width: int = 640, height: int = 400) -> None:
    """Writes a line chart of ``losses`` [(step, loss), ...]: raw points in light grey, a
    running mean in blue, axes with step and loss ticks."""
    from PIL import Image, ImageDraw
    losses = [(s, v) for s, v in losses if np.isfinite(v)] or [(0, 0.0)]  # a diverged run
    steps = np.array([s for s, _ in losses], np.float64)
    values = np.array([v for _, v in losses], np.float64)
    window = max(1, len(values) // 40)
    smooth = np.array([values[max(0, i - window + 1):i + 1].mean()
                       for i in range(len(values))])
    left, right, top, bottom = 70, 20, 30, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x_lo, x_hi = steps.min(), max(steps.max(), steps.min() + 1)
    y_lo, y_hi = 0.0, float(np.percentile(values, 98)) * 1.1 or 1.0

    def to_pixel(step, value):
        x = left + (step - x_lo) / (x_hi - x_lo) * (width - left - right)
        y = height - bottom - (min(value, y_hi) - y_lo) / (y_hi - y_lo) * (height - top - bottom)
        return float(x), float(y)

    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)],
              fill="black", width=1)
    for k in range(5):
        value = y_lo + k * (y_hi - y_lo) / 4
        _, y = to_pixel(x_lo, value)
        draw.line([(left - 5, y), (left, y)], fill="black")
        draw.text((8, y - 6), f"{value:.3f}", fill="black")
        step = x_lo + k * (x_hi - x_lo) / 4
        x, _ = to_pixel(step, y_lo)
        draw.line([(x, height - bottom), (x, height - bottom + 5)], fill="black")
        draw.text((x - 12, height - bottom + 8), f"{int(step)}", fill="black")
    draw.text((width // 2 - 20, height - 20), "step", fill="black")
    draw.text((left + 10, 8), "training loss (noise MSE)", fill="black")
    if len(steps) > 1:
        draw.line([to_pixel(s, v) for s, v in zip(steps, values)], fill=(190, 190, 190))
        draw.line([to_pixel(s, v) for s, v in zip(steps, smooth)], fill=(30, 90, 200), width=2)
    image.save(path)


# --- the run ------------------------------------------------------------------------------


def train(steps=500, batch_size=32, channels=16, image_size=8, timesteps=200,
          learning_rate=2e-3, warmup_steps=50, ema_decay=0.995, dtype="float32",
          num_samples=64, checkpoint_every=200, log_every=25, time_budget_s=0.0,
          resume=False, judge_path="runs/mlp/mlp_params.safetensors", seed=0,
          out="runs/diffusion"):
    """Trains, samples and judges; returns a dict of results (losses, final step, judge's
    figures for samples and for real digits, file paths)."""
    os.makedirs(out, exist_ok=True)
    # float32 master parameters and optimizer state; the UNet computes in ``dtype``.
    policy = optim.get_policy(f"params=float32,compute={dtype},output=float32")
    x_train, (x_test, _) = digit_images(image_size, seed)
    schedule = cosine_schedule(timesteps)
    optimizer = make_optimizer(learning_rate, warmup_steps, steps)
    ema = optim.ema(ema_decay)
    state = init_train_state(seed, channels, image_size, optimizer, ema)
    losses = []
    if resume and os.path.exists(os.path.join(out, CHECKPOINT)):
        state, losses = load_checkpoint(out, like=state)
        print(f"resumed from {os.path.join(out, CHECKPOINT)} at step {int(state['step'])}")
    train_step = make_train_step(optimizer, ema, schedule, timesteps, policy, batch_size)
    dataset = fnp.asarray(x_train)  # on the device once; batches are gathered there
    key = random.key(seed)
    count = sum(int(np.prod(leaf.shape))
                for leaf in flamefx.tree_util.tree_leaves(state["params"]))
    print(f"UNet: {count:,} parameters; {len(x_train)} training digits at "
          f"{image_size}x{image_size}; {timesteps} diffusion steps; {dtype}")

    first_step = int(state["step"])
    start = time.perf_counter()
    pending = []  # (step, loss array) not yet read back

    def read_pending():
        # Reading losses waits for the device: done at log and checkpoint times only.
        fresh = [(s, float(value)) for s, value in pending]
        pending.clear()
        losses.extend(fresh)
        return fresh

    for step in range(first_step, steps):
        # Nothing here waits for the device: the loss is kept as an array until a log line.
        state, loss = train_step(state, dataset, key)
        if step == first_step:
            # What exists now (the data, the compiled step: ~50k objects) lives through the
            # loop. Frozen, Python's collector stops re-reading it in the full collections
            # that the steps' new states set off every ~140 steps: 23 ms pauses (the GPU's
            # queue runs dry) become 0.3 ms ones.
            gc.freeze()
        pending.append((step, loss))
        done = step + 1
        if step % log_every == 0 or done == steps:
            recent = np.mean([value for _, value in read_pending()])
            rate = (done - first_step) / (time.perf_counter() - start)
            print(f"step {step:6d}/{steps}  loss {recent:.4f}  {rate:6.2f} steps/s",
                  flush=True)
        out_of_time = time_budget_s and time.perf_counter() - start > time_budget_s
        if done % checkpoint_every == 0 or done == steps or out_of_time:
            read_pending()
            save_checkpoint(out, state, losses)
        if out_of_time:
            print(f"time budget of {time_budget_s:.0f} s reached at step {done}")
            break
    gc.unfreeze()  # cycles among those objects are collectable again
    train_seconds = time.perf_counter() - start
    final_step = int(state["step"])

    sample = make_sampler(schedule, timesteps, policy)
    start = time.perf_counter()
    noise = random.normal(random.key(seed + 1), (num_samples, 1, image_size, image_size))
    samples = np.asarray(sample(state["ema_params"], random.key(seed + 2), noise))
    sample_seconds = time.perf_counter() - start
    print(f"sampled {num_samples} images ({timesteps} steps) in {sample_seconds:.1f} s")

    grid_path = os.path.join(out, "samples.png")
    loss_path = os.path.join(out, "loss.png")
    write_sample_grid(grid_path, samples)
    write_sample_grid(os.path.join(out, "real_digits.png"), x_test[:num_samples])
    try:
        write_loss_plot(loss_path, losses or [(final_step, float("nan"))])
    except ImportError:  # Pillow is the `examples` extra; the run's results stand without it
        print("Pillow is not installed: no loss plot (pip install pillow)")
        loss_path = None
    mlp_params = load_judge(judge_path, seed)
    sample_figures = judge(mlp_params, samples)
    real_figures = judge(mlp_params, x_test)
    results = {"final_step": final_step, "losses": losses,
               "final_loss": float(np.mean([v for _, v in losses[-50:]])) if losses else None,
               "train_seconds": train_seconds, "sample_seconds": sample_seconds,
               "samples": sample_figures, "real": real_figures,
               "samples_png": grid_path, "loss_png": loss_path}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"judge (confidence >= 0.9 share, class entropy / log 10):\n"
          f"  samples      {sample_figures['confident_share']:.3f}  "
          f"{sample_figures['class_entropy']:.3f}  labels {sample_figures['histogram']}\n"
          f"  real digits  {real_figures['confident_share']:.3f}  "
          f"{real_figures['class_entropy']:.3f}  labels {real_figures['histogram']}")
    print(f"wrote {grid_path}, {loss_path}, {os.path.join(out, 'results.json')}")
    return results


def main(argv):
    del argv
    print(f"flamefx {flamefx.__version__} on {flamefx.default_device()}")
    train(FLAGS.steps, FLAGS.batch_size, FLAGS.channels, FLAGS.image_size, FLAGS.timesteps,
          FLAGS.learning_rate, FLAGS.warmup_steps, FLAGS.ema_decay, FLAGS.dtype,
          FLAGS.num_samples, FLAGS.checkpoint_every, FLAGS.log_every, FLAGS.time_budget_s,
          FLAGS.resume, FLAGS.judge, FLAGS.seed, FLAGS.out)


if __name__ == "__main__":
    app.run(main)
