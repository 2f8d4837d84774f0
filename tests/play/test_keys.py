"""Key bindings: digits, the world's key map and commands, and who wins when they collide."""

from genie.play.keys import Bindings


def test_digits_pick_only_the_actions_the_world_has():
    keys = Bindings(3)
    assert keys.press("1").action == 0 and keys.press("3").action == 2
    assert keys.press("[2]").action == 1  # keypad
    assert keys.press("4") is None and keys.press("9") is None


def test_key_map_binds_and_a_bound_letter_moves_its_command_to_shift():
    keys = Bindings(4, {"left": 0, "s": 2, "space": 3})
    assert keys.press("left").action == 0 and keys.press("space").action == 3
    assert keys.press("s").action == 2
    assert keys.press("s", shift=True).command == "screenshot"
    assert keys.press("f12").command == "screenshot"
    assert keys.press("r").command == "reset" and keys.press("r", shift=True).command == "reset"
    assert keys.command_key("screenshot") == "Shift+S" and keys.command_key("reset") == "R"
    assert keys.keys_for(2) == ["3", "s"]
    every = {k: 0 for k in ("left", "right", "up", "down", "w", "a", "s", "d", "space")}
    assert Bindings(1, every).keys_for(0) == ["1", "arrows", "WASD", "space"]


def test_key_map_entries_that_do_not_fit_are_skipped():
    keys = Bindings(2, {"escape": 0, "backspace": 1, "up": 5, "down": "x", "right": 1})
    assert keys.press("escape").command == "quit" and keys.press("backspace").command == "undo"
    assert keys.press("up") is None and keys.press("down") is None
    assert keys.press("right").action == 1
