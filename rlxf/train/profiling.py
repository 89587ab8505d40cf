"""One training step under torch.profiler: where the time goes, on the CPU and on the GPU."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


class StepProfiler:
    """Records from construction to :meth:`finish`, then writes the step's top operators
    (``step_N.txt``), its Python stacks weighted by CPU time (``step_N.stacks``, the collapsed
    format flame-graph tools read) and a Chrome trace (``step_N.json``)."""

    def __init__(self):
        self.on_cuda = torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on_cuda else [])
        # verbose: keeps the Python frames that export_stacks writes
        verbose = torch._C._profiler._ExperimentalConfig(verbose=True)
        self._profile = profile(activities=activities, with_stack=True, experimental_config=verbose)
        self._profile.__enter__()

    def finish(self, folder: Path, step: int) -> Path:
        if self.on_cuda:
            torch.cuda.synchronize()
        self._profile.__exit__(None, None, None)
        folder.mkdir(parents=True, exist_ok=True)
        averages = self._profile.key_averages()
        sections = [("self CPU time", "self_cpu_time_total")]
        if self.on_cuda:
            sections.append(("self GPU time", "self_device_time_total"))
        report = "\n\n".join(
            f"step {step}, by {title}\n{averages.table(sort_by=key, row_limit=40)}" for title, key in sections
        )
        (folder / f"step_{step}.txt").write_text(report + "\n")
        self._profile.export_stacks(str(folder / f"step_{step}.stacks"), "self_cpu_time_total")
        self._profile.export_chrome_trace(str(folder / f"step_{step}.json"))
        return folder / f"step_{step}.txt"
