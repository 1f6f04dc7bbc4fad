"""ControlNets beside the UNet, for sd-adapters' `parallel-controlnet` (SwiftDiffusion runs
ControlNets as a service on other GPUs; here, on one machine).

What can overlap honestly: a UNet forward needs the ControlNet residuals of its own step, so
step t's ControlNets cannot run ahead of step t's latents. But diffusers' UNet reads the
residuals late: the down residuals are added to the skip connections after its last down
block, the mid residual after its mid block. So the ControlNets of step t run while the UNet
of step t runs conv_in, the time embedding and the down blocks (its encoder half); a hook after
the last down block waits for them. At best a step saves min(ControlNets, UNet encoder) time;
the UNet's mid and up blocks always wait for the residuals.

- CPU: the ControlNets run in a forked worker process (torch.multiprocessing, one intra-op
  thread: a thread would share the interpreter and the serving process's intra-op pool, a
  process gets its own). Inputs and residuals live in shared-memory tensors allocated once; a
  pipe signals each step. A thread of the serving process waits for the worker: its wait is
  the background part "controlnet" (the ControlNets' time as the request sees it).
- CUDA: the ControlNets run on a second stream; the UNet's stream waits for their event after
  its down blocks. No background part: reading a CUDA clock synchronizes the device, which
  would serialize the streams. (Not run here: this machine has no GPU.)
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Callable

import torch


def controlnet_residuals(controlnets, images: list[torch.Tensor], latents, t, embeddings):
    """Every ControlNet on its control image, residuals summed: (down residuals, mid residual)."""
    return controlnets(latents, t, embeddings, controlnet_cond=images, conditioning_scale=[1.0] * len(images), return_dict=False)


class _Overlapped:
    """A step: the ControlNets launched, then the UNet forward with the residuals it waits for."""

    waited_ns = 0  # host time the UNet spent waiting for the residuals, summed over the steps

    def __call__(self, unet_forward: Callable, latents, t, embeddings, part):
        with part("unet"):
            down, mid = self.launch(latents, t, embeddings, part)
            return unet_forward(down, mid)

    def wait(self) -> None:  # the hook after the UNet's last down block
        start = time.perf_counter_ns()
        self._wait()
        self.waited_ns += time.perf_counter_ns() - start


def _worker(controlnets, images, inputs, outputs, conn, parent_end) -> None:
    """The worker process: residuals for every step signalled, written into the shared outputs."""
    parent_end.close()  # so the pipe reports the serving process's end as closed if it dies
    torch.set_num_threads(1)
    latents, t, embeddings = inputs
    with torch.no_grad():
        try:
            while conn.recv():
                down, mid = controlnet_residuals(controlnets, images, latents, t, embeddings)
                for buffer, value in zip(outputs, (*down, mid)):
                    buffer.copy_(value)
                conn.send(True)
        except EOFError:
            pass


def _stop(process, conn) -> None:
    try:
        conn.send(False)
    except (BrokenPipeError, OSError):
        pass
    process.join(timeout=5)
    if process.is_alive():
        process.terminate()


class ProcessControlNets(_Overlapped):
    """CPU: the ControlNets in a forked process, overlapping the UNet's encoder half."""

    def __init__(self, controlnets, images: list[torch.Tensor], example: tuple[torch.Tensor, ...]):
        with torch.no_grad():
            down, mid = controlnet_residuals(controlnets, images, *example)  # the residuals' shapes
        self.inputs = [torch.empty_like(x).share_memory_() for x in example]
        self.outputs = [torch.empty_like(x).share_memory_() for x in (*down, mid)]
        context = torch.multiprocessing.get_context("fork")  # the models are inherited, not pickled
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=_worker, name="controlnet-worker", daemon=True,
                                       args=(controlnets, images, self.inputs, self.outputs, child_end, self.conn))
        self.process.start()
        child_end.close()
        self._waiter: threading.Thread | None = None
        self._error: BaseException | None = None
        weakref.finalize(self, _stop, self.process, self.conn)

    def launch(self, latents, t, embeddings, part):
        for buffer, value in zip(self.inputs, (latents, t, embeddings)):
            buffer.copy_(value)
        self._waiter = threading.Thread(target=self._round_trip, args=(part,), name="controlnet-wait")
        self._waiter.start()
        return self.outputs[:-1], self.outputs[-1]

    def _round_trip(self, part) -> None:
        try:
            with part("controlnet", background=True):
                self.conn.send(True)
                self.conn.recv()
        except BaseException as exc:  # re-raised in the serving thread by _wait
            self._error = exc

    def _wait(self) -> None:
        if self._waiter is None:
            return
        self._waiter.join()
        self._waiter = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the ControlNet worker process failed: {error!r}") from error


class StreamControlNets(_Overlapped):
    """CUDA: the ControlNets on a second stream, overlapping the UNet's encoder half."""

    def __init__(self, controlnets, images: list[torch.Tensor], device: torch.device):
        self.controlnets, self.images = controlnets, images
        self.stream = torch.cuda.Stream(device)
        self.ready = torch.cuda.Event()
        self.pending = False

    def launch(self, latents, t, embeddings, part):
        main = torch.cuda.current_stream(latents.device)
        self.stream.wait_stream(main)  # the step's latents are written
        with torch.cuda.stream(self.stream):
            down, mid = controlnet_residuals(self.controlnets, self.images, latents, t, embeddings)
        self.ready.record(self.stream)
        for residual in (*down, mid):
            residual.record_stream(main)  # read on the main stream: not reused before it is done
        self.pending = True
        return down, mid

    def _wait(self) -> None:  # the device waits, not the host: waited_ns stays near 0 here
        if self.pending:
            torch.cuda.current_stream(self.stream.device).wait_event(self.ready)
            self.pending = False


def overlap_with_unet(unet, controlnets, images, example, device: torch.device) -> _Overlapped:
    """The runner for the device, hooked after the UNet's last down block."""
    runner = StreamControlNets(controlnets, images, device) if device.type == "cuda" else ProcessControlNets(controlnets, images, example)
    unet.down_blocks[-1].register_forward_hook(lambda *_: runner.wait())
    return runner
