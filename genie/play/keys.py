"""Which key does what in the play window.

Keys are pygame key names (`pygame.key.name(event.key)`: 'left', 'space', 'a', '1', 'backspace').
Digits 1..8 pick latent actions 0..7 (as many as the world has, keypad digits too); the world's
key map (world.json, written by `genie calibrate`) binds arrows, WASD and space to latent actions;
letters R, P, N, S, V, H, Backspace and Esc are commands. A letter the key map binds to an action
(S is 'move down' in WASD) keeps that meaning and its command moves to Shift+letter.
"""

from __future__ import annotations

from dataclasses import dataclass

# command -> (key, what it does); the order is the help overlay's order
COMMANDS: dict[str, tuple[str, str]] = {
    "reset": ("r", "reset to the prompt"),
    "undo": ("backspace", "undo the last step"),
    "pause": ("p", "pause / resume stepping"),
    "new": ("n", "start from the next prompt"),
    "screenshot": ("s", "save a screenshot (png)"),
    "record": ("v", "start / stop recording (mp4)"),
    "help": ("h", "show / hide this help"),
    "quit": ("escape", "quit"),
}
RESERVED = {"backspace", "escape", "f12"}  # never bound to an action: undo, quit and screenshot
MAX_DIGITS = 8
GROUPS = {"arrows": ("left", "right", "up", "down"), "WASD": ("w", "a", "s", "d"),
          "space": ("space",)}


@dataclass(frozen=True)
class Press:
    """What a key press means: a latent action or a command (exactly one is set)."""

    action: int | None = None
    command: str | None = None


class Bindings:
    """Key names -> latent actions and commands for a world with `num_actions` actions."""

    def __init__(self, num_actions: int, key_map: dict[str, int] | None = None):
        self.num_actions = num_actions
        self.actions: dict[str, int] = {}
        for a in range(min(num_actions, MAX_DIGITS)):
            self.actions[str(a + 1)] = a
            self.actions[f"[{a + 1}]"] = a  # keypad
        for key, action in (key_map or {}).items():
            # A key map from another world (more actions) or a reserved key is skipped, not fatal:
            # the window still opens and the digits still work.
            if key not in RESERVED and isinstance(action, int) and 0 <= action < num_actions:
                self.actions[key.lower()] = action
        self.commands = {key: name for name, (key, _) in COMMANDS.items()}
        self.commands["f12"] = "screenshot"

    def press(self, key: str, shift: bool = False) -> Press | None:
        """The meaning of pressing `key` (with Shift held or not); None if it means nothing."""
        key = key.lower()
        if shift and key in self.commands:
            return Press(command=self.commands[key])
        if key in self.actions:
            return Press(action=self.actions[key])
        if key in self.commands:
            return Press(command=self.commands[key])
        return None

    def keys_for(self, action: int) -> list[str]:
        """Keys that pick `action`, digit first, without the keypad duplicates; all four arrows
        (or W, A, S and D) on one action read 'arrows' ('WASD')."""
        keys = [k for k, a in self.actions.items() if a == action and not k.startswith("[")]
        for label, group in GROUPS.items():
            if len(group) > 1 and all(k in keys for k in group):
                at = keys.index(group[0])
                keys = [k for k in keys[:at] if k not in group] + [label] + \
                    [k for k in keys[at:] if k not in group]
        return keys

    def command_key(self, command: str) -> str:
        """How to type a command, e.g. 'S' or 'Shift+S' when S moves."""
        key = COMMANDS[command][0]
        label = {"backspace": "Backspace", "escape": "Esc"}.get(key, key.upper())
        return f"Shift+{label}" if key in self.actions else label

    def help_lines(self) -> list[tuple[str, str]]:
        """(keys, meaning) rows for the help overlay."""
        rows = [(f"1-{min(self.num_actions, MAX_DIGITS)}", "latent actions (hold to repeat)")]
        mapped = [g for g, keys in GROUPS.items() if any(k in self.actions for k in keys)]
        others = sorted(k for k in self.actions if not k[0].isdigit() and not k.startswith("[")
                        and not any(k in keys for keys in GROUPS.values()))
        if mapped or others:
            rows.append((" ".join(mapped + others), "the world's key map (see the panel)"))
        else:
            rows.append(("arrows WASD", "not mapped: run genie calibrate on this world"))
        for c, (_, what) in COMMANDS.items():
            key = self.command_key(c) + (" / F12" if c == "screenshot" else "")
            rows.append((key, what))
        return rows
