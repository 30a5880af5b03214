"""The scan's progress display: one rich progress line per device.

Shows files, bytes, pictures, matches and flags as results arrive, with an ETA from the bytes
the walk planned. Flags print above the bars as they are raised.
"""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from triage.units import terminal_safe
from workers.scan import DeviceState, Reporter


OPENING = "opening: partitions, file systems"
LISTING = "listing files"


def phase_text(state: DeviceState, model: bool) -> str:
    """What a device's bar is waiting for: opening it (partitions, file systems and the walk
    that plans the bytes; no ETA yet), reading files, or the model scoring the last pictures
    after every byte was read."""
    if state.phase in ("waiting", "probing"):
        return OPENING
    if not state.total_bytes and not state.bytes:
        return LISTING
    if model and state.phase == "scanning" and state.total_bytes and \
            state.bytes >= state.total_bytes:
        return f"model: scoring pictures ({state.scored} scored)"
    return ""


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None, model: bool = False):
        self.console = console or Console(stderr=True)
        self.model = model
        # fits an 80-column terminal: the percentage is of the bytes the walk planned
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=10),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(compact=True, elapsed_when_finished=True),
            console=self.console, transient=False, refresh_per_second=4)
        self._tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def device_added(self, device_id: str) -> None:
        # the description is rich markup: an evidence file name must not be read as markup
        self._tasks[device_id] = self.progress.add_task(escape(terminal_safe(device_id)),
                                                        total=None, stats=OPENING)

    def device_planned(self, device_id: str, files: int, nbytes: int) -> None:
        self.progress.update(self._tasks[device_id], total=max(nbytes, 1), stats="reading files")

    def _stats(self, state: DeviceState) -> str:
        hits = len(state.exact_alerts)
        phase = phase_text(state, self.model)
        return (f"{phase + ': ' if phase and phase != LISTING else ''}"
                f"{state.files} files {state.pictures} pics "
                f"{'[red]' if hits else ''}{hits} hits{'[/red]' if hits else ''} "
                f"{len(state.near)} near {state.flags} flags")

    def batch_done(self, device_id: str, state: DeviceState) -> None:
        self.progress.update(self._tasks[device_id], completed=state.bytes, stats=self._stats(state))

    def device_finished(self, device_id: str, state: DeviceState) -> None:
        if device_id not in self._tasks:
            self.device_added(device_id)
        task = self._tasks[device_id]
        # as the summary says it (views.status_text: "complete with gaps"), short for the bar
        label = ("early stop" if state.stopped_early else
                 "with gaps" if state.status == "partial" else state.status)
        total = next((t.total for t in self.progress.tasks if t.id == task), None)
        done = total or max(state.bytes, 1)
        self.progress.update(task, total=done, completed=done,
                             stats=f"{self._stats(state)} [bold]{label}[/bold]")

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {terminal_safe(message)}", style="yellow", markup=False,
                           highlight=False)
