"""Counts in printed lines: "1 episode", "2 episodes", "1,024 frames"."""


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, with an s unless n is 1 (every noun genie counts takes a plain s)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
