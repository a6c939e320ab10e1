"""A terminal for the tests: a tmux server of their own, whose screen is read as a user sees it.

process-compose's terminal UI needs a terminal; tmux gives it one, types keys into it and
shows what is on the screen (`capture-pane`), including after the program has exited
(`remain-on-exit`: the pane stays). The program runs from a shell, as at a prompt, which
writes its exit status to a file: tmux 3.3a here sometimes leaves an exited program
unreaped, and its pane without a status.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from testlib.serve import wait_until

# Box drawing that frames process-compose's panes and dialogs, around the text of each line.
FRAME = "│┌┐└┘├┤┬┴┼─║═╔╗╚╝ "


def rows_taken(rows: list[str], lines: list[str]) -> list[int]:
    """How many of `rows` each of `lines` takes, in order from the first row.

    process-compose's log pane wraps a long line at word boundaries; `rows` are
    as `Terminal.text` gives them, so the spaces at a wrap are compared loosely.
    Raises AssertionError when the rows do not show these lines.
    """
    taken, at = [], 0
    for line in lines:
        want, got, n = line.replace(" ", ""), "", 0
        while at + n < len(rows) and want.startswith(got) and got != want:
            got += rows[at + n].replace(" ", "")
            n += 1
        if got != want:
            raise AssertionError(f"{line!r} is not shown from row {at}:\n" + "\n".join(rows))
        taken.append(n)
        at += n
    return taken


def have_tmux() -> bool:
    return shutil.which("tmux") is not None


TMUX_MISSING = "tmux is not installed: apt-get install tmux (Debian), or nix shell nixpkgs#tmux"


class Terminal:
    """One tmux session of a given size, on a socket of its own."""

    def __init__(self, base: Path, env: dict[str, str], width: int = 200, height: int = 50) -> None:
        # `base` should be short: the socket goes there.
        self.socket = base / "tmux.sock"
        self.status_file = base / "tmux.status"
        self.env = env
        self.size = (width, height)

    def tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout

    def run(self, argv: list[str], cwd: Path) -> None:
        """Start `argv` in the terminal, as if typed at a shell prompt in `cwd`."""
        width, height = self.size
        self.status_file.unlink(missing_ok=True)
        partial = shlex.quote(f"{self.status_file}.new")
        command = (
            f"{shlex.join(argv)}; echo $? >{partial} && mv {partial} "
            f"{shlex.quote(str(self.status_file))}"
        )
        # One tmux command line: the pane outlives the program before it can exit.
        self.tmux(
            *("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height)),
            *("-c", str(cwd), command),
            *(";", "set-option", "-t", "t", "remain-on-exit", "on"),
        )

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "t").splitlines()

    def text(self) -> list[str]:
        """The screen's lines without the frames around them, blank lines left out."""
        lines = (line.strip(FRAME) for line in self.screen())
        return [line for line in lines if line]

    def log(self, name: str) -> list[str]:
        """The rows of the log pane of process `name`, below its title."""
        text = self.text()
        return text[text.index(name) + 1 :]

    def row(self, name: str) -> list[str]:
        """The words of the process table's row for process `name`."""
        for line in self.text():
            words = line.split()
            # An icon (● or ✘), the PID, the name, ...
            if len(words) > 4 and words[1].isdigit() and words[2] == name:
                return words
        raise AssertionError(f"no row for {name} on the screen:\n" + "\n".join(self.screen()))

    def wait_for_line(self, line: str, timeout: float = 120) -> list[str]:
        """Wait until `line` is a whole line of the screen; the screen's text then."""

        def shown() -> list[str] | None:
            text = self.text()
            return text if line in text else None

        return wait_until(
            shown,
            f"the line {line!r} on the screen",
            timeout=timeout,
            interval=0.1,
        )

    def wait_for_text(self, text: str, timeout: float = 120) -> None:
        """Wait until `text` is on the screen, within a line (a dialog over other text)."""
        wait_until(
            lambda: any(text in line for line in self.screen()),
            f"{text!r} on the screen",
            timeout=timeout,
            interval=0.1,
        )

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def exited(self) -> bool:
        return self.status_file.exists()

    def exit_status(self, timeout: float = 120) -> int:
        """Wait for the program to exit; its exit status."""
        wait_until(
            self.exited, "the program in the terminal to exit", timeout=timeout, interval=0.1
        )
        return int(self.status_file.read_text())

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"],
            env=self.env,
            capture_output=True,
            timeout=30,
            check=False,
        )
