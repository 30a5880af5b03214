"""The scan's progress display: one rich progress line per device.

Shows files, bytes, pictures, matches and flags as results arrive, with an ETA from the bytes
the walk planned. Flags print above the bars as they are raised.
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from workers.scan import DeviceState, Reporter


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=24),
            DownloadColumn(),
            TextColumn("{task.fields[files]} files, {task.fields[pictures]} pictures"),
            TextColumn("[red]{task.fields[matches]} matches[/red], "
                       "[yellow]{task.fields[near]} near[/yellow], {task.fields[flags]} flags"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console, transient=False, refresh_per_second=4)
        self._tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def device_added(self, device_id: str) -> None:
        self._tasks[device_id] = self.progress.add_task(
            device_id, total=None, files=0, pictures=0, matches=0, near=0, flags=0,
            status="opening")

    def device_planned(self, device_id: str, files: int, nbytes: int) -> None:
        self.progress.update(self._tasks[device_id], total=max(nbytes, 1), status="scanning")

    def _fields(self, state: DeviceState) -> dict:
        return dict(completed=state.bytes, files=state.files, pictures=state.pictures,
                    matches=len(state.exact_alerts), near=len(state.near), flags=state.flags)

    def batch_done(self, device_id: str, state: DeviceState) -> None:
        self.progress.update(self._tasks[device_id], **self._fields(state))

    def device_finished(self, device_id: str, state: DeviceState) -> None:
        if device_id not in self._tasks:
            self.device_added(device_id)
        task = self._tasks[device_id]
        fields = self._fields(state)
        fields.pop("completed")
        label = state.status + (" (stopped early: triage mode)" if state.stopped_early else "")
        total = next((t.total for t in self.progress.tasks if t.id == task), None)
        done = total or max(state.bytes, 1)
        self.progress.update(task, total=done, completed=done, status=label, **fields)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
