"""Drawing the play window: the frame scaled up with sharp pixels, and a side panel.

The panel lists every latent action with its keys, its name and a thumbnail of the frame it
would lead to, and shows the step count, generation time, frame rate, queue and recording
state. Nothing here knows about worlds or threads: the app hands a `Screen` what to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pygame

from genie.play.keys import Bindings

BG, PANEL_BG, ROW_BG = (16, 16, 20), (30, 30, 36), (60, 70, 110)
TEXT, DIM, GOOD, WARN, BAD = (235, 235, 235), (150, 150, 160), (120, 220, 120), (250, 200, 80), \
    (250, 100, 90)
PAD, LINE, PANEL_MIN = 10, 20, 280


@dataclass
class Status:
    """Everything the panel shows besides the frame and the thumbnails."""

    title: str = ""
    steps: int = 0
    action: int | None = None
    gen_ms: float = 0.0
    fps: float = 0.0
    queued: int = 0
    dropped: int = 0
    paused: bool = False
    busy_s: float = 0.0  # seconds the current frame has been computing (0: not computing)
    recording: str = ""  # "REC name (n frames)" while recording
    message: str = ""
    message_bad: bool = False
    caption: str = ""
    previews: bool = True
    notes: list[str] = field(default_factory=list)


def to_surface(frame: np.ndarray) -> pygame.Surface:
    """(H, W, 3) uint8 -> a surface of the same pixels."""
    frame = np.ascontiguousarray(frame)
    return pygame.image.frombuffer(frame.tobytes(), (frame.shape[1], frame.shape[0]), "RGB")


class Screen:
    """Layout and drawing for a world of frame size `size` (H, W) shown `scale` times larger."""

    def __init__(self, size: tuple[int, int], scale: int, bindings: Bindings,
                 names: list[str]):
        pygame.font.init()
        # pygame's bundled font: the same letters on every machine, no system font lookup.
        self.font, self.small = pygame.font.Font(None, 22), pygame.font.Font(None, 18)
        self.bindings, self.names = bindings, names
        h, w = size
        self.frame_size = (w * scale, h * scale)
        n = bindings.num_actions
        header, footer = 7 * LINE + 2 * PAD, LINE + PAD
        rows_h = max(self.frame_size[1], 240) - header - footer
        th = int(np.clip(rows_h // max(n, 1) - 6, 28, 64))  # thumbnail height
        self.thumb = (max(1, round(th * w / h)), th)
        self.row_h = th + 6
        self.panel_x = self.frame_size[0]
        self.panel_w = max(PANEL_MIN, self.thumb[0] + 190)
        self.rows_y = header
        self.size = (self.panel_x + self.panel_w,
                     max(self.frame_size[1], header + n * self.row_h + footer))
        self._frame: pygame.Surface | None = None
        self._thumbs: dict[int, pygame.Surface] = {}
        self._text: dict[tuple[str, tuple, bool], pygame.Surface] = {}

    # ------------------------------------------------------------------ content

    def set_frame(self, frame: np.ndarray) -> None:
        # scale, not smoothscale: a world's pixels are its tokens' output, blur would hide them
        self._frame = pygame.transform.scale(to_surface(frame), self.frame_size)
        self._thumbs = {}

    def set_previews(self, actions: list[int], frames: np.ndarray) -> None:
        for a, f in zip(actions, frames, strict=True):
            self._thumbs[a] = pygame.transform.smoothscale(to_surface(f), self.thumb)

    @property
    def previews_shown(self) -> int:
        return len(self._thumbs)

    # ------------------------------------------------------------------ drawing

    def draw(self, surface: pygame.Surface, status: Status, show_help: bool) -> None:
        surface.fill(BG)
        if self._frame is not None:
            surface.blit(self._frame, (0, 0))
        pygame.draw.rect(surface, PANEL_BG, (self.panel_x, 0, self.panel_w, self.size[1]))
        self._header(surface, status)
        for a in range(self.bindings.num_actions):
            self._row(surface, a, status)
        self._write(surface, "H help   Esc quit", (self.panel_x + PAD, self.size[1] - LINE - 4),
                    DIM, small=True)
        if show_help:
            self._help(surface)

    def _header(self, surface: pygame.Surface, s: Status) -> None:
        x, y = self.panel_x + PAD, PAD
        self._write(surface, s.title, (x, y), TEXT)
        y += LINE + 4
        action = "-" if s.action is None else f"{self.names[s.action]} [{s.action + 1}]"
        self._write(surface, f"step {s.steps}   last: {action}", (x, y), TEXT)
        y += LINE
        self._write(surface, f"{s.gen_ms:.0f} ms/frame   {s.fps:.1f} fps", (x, y), TEXT)
        y += LINE
        queue = f"queued {s.queued}"
        if s.busy_s > 0.15:  # shown only when a frame is slow enough to notice
            queue += f"   generating {s.busy_s:.1f}s"
        self._write(surface, queue, (x, y), DIM)
        if s.dropped:
            self._write(surface, f"dropped {s.dropped}", (x + 190, y), BAD)
        y += LINE
        flags = [("PAUSED (P)", WARN)] if s.paused else []
        if s.recording:
            flags.append((s.recording, BAD))
        for text, color in flags:
            self._write(surface, text, (x, y), color)
            x += self._surface(text, color).get_width() + 12
        x = self.panel_x + PAD
        y += LINE
        if s.message:
            self._write(surface, s.message, (x, y), BAD if s.message_bad else GOOD, small=True)
        y += LINE
        self._write(surface, s.caption or ("actions and what they would do" if s.previews
                                           else "actions (previews off)"), (x, y), DIM,
                    small=True)

    def _row(self, surface: pygame.Surface, a: int, s: Status) -> None:
        x, y = self.panel_x + PAD, self.rows_y + a * self.row_h
        if a == s.action:
            pygame.draw.rect(surface, ROW_BG, (self.panel_x + 2, y - 2, self.panel_w - 4,
                                               self.row_h - 2), border_radius=4)
        thumb = self._thumbs.get(a)
        if thumb is not None:
            surface.blit(thumb, (x, y))
        else:  # not computed (yet): an empty box, so the rows never jump
            pygame.draw.rect(surface, BG, (x, y, *self.thumb))
            pygame.draw.rect(surface, DIM, (x, y, *self.thumb), width=1)
        tx = x + self.thumb[0] + 10
        width = self.panel_x + self.panel_w - PAD - tx
        self._write(surface, self.names[a], (tx, y + 2), TEXT, width=width)
        keys = "  ".join(self.bindings.keys_for(a))
        self._write(surface, keys, (tx, y + LINE + 2), DIM, small=True, width=width)

    def _help(self, surface: pygame.Surface) -> None:
        rows = self.bindings.help_lines()
        w, h = self.size
        shade = pygame.Surface((w, h), pygame.SRCALPHA)
        shade.fill((0, 0, 0, 215))
        surface.blit(shade, (0, 0))
        y = max(PAD, (h - (len(rows) + 2) * (LINE + 4)) // 2)
        self._write(surface, "keys", (2 * PAD, y), TEXT)
        y += LINE + 8
        key_w = max(self._surface(k, WARN).get_width() for k, _ in rows) + 16
        for key, what in rows:
            self._write(surface, key, (2 * PAD, y), WARN)
            self._write(surface, what, (2 * PAD + key_w, y), TEXT)
            y += LINE + 4

    def _surface(self, text: str, color: tuple, small: bool = False) -> pygame.Surface:
        # Rendered text is cached: the same few labels are drawn every frame.
        key = (text, color, small)
        if key not in self._text:
            if len(self._text) > 512:
                self._text.clear()
            self._text[key] = (self.small if small else self.font).render(text, True, color)
        return self._text[key]

    def _write(self, surface: pygame.Surface, text: str, pos: tuple[int, int], color: tuple,
               small: bool = False, width: int | None = None) -> None:
        """Draw one line; cut to `width` pixels (default: to the window's edge) with '..'."""
        if not text:
            return
        width = width or self.size[0] - pos[0] - 4
        rendered = self._surface(text, color, small)
        while rendered.get_width() > width and len(text) > 1:
            text = text[:-1]
            rendered = self._surface(text.rstrip() + "..", color, small)
        surface.blit(rendered, pos)
