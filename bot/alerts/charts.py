"""PNG charts for alerts and status: use per path, and the last 24 hours' trend of one path.

Drawn with Pillow alone (no plotting stack); every figure in a chart is also in the message text,
for phones and screen readers.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.i18n import _, number

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 720, 360
BG, FG, GRID = (255, 255, 255), (33, 37, 41), (222, 226, 230)
OK, WARN, CRIT = (46, 160, 67), (219, 154, 4), (207, 34, 46)


# Fonts with Chinese glyphs, from Debian's packages (fonts-noto-cjk, fonts-wqy-microhei/zenhei); the
# first one present draws every chart. Pillow's own font has no CJK glyphs: paths and titles in
# Chinese would come out as boxes.
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


@cache
def cjk_font_path() -> str | None:
    """The CJK font charts use, or None (said once in the log, with what to install)."""
    for candidate in CJK_FONTS:
        if Path(candidate).is_file():
            return candidate
    log.warning("charts: no CJK font found (looked for %s); Chinese text in charts shows as boxes: "
                "install fonts-noto-cjk or fonts-wqy-microhei", ", ".join(CJK_FONTS))
    return None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    path = cjk_font_path()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:  # unreadable or not a font: the default below still draws Latin text
            log.warning("charts: cannot load %s; using Pillow's default font", path)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font still works
        return ImageFont.load_default()


def _colour(percent: float, warn: float, critical: float) -> tuple[int, int, int]:
    return CRIT if percent >= critical else WARN if percent >= warn else OK


def usage_chart(title: str, usage: Sequence[tuple[str, float]], trend: Sequence[tuple[datetime, float]],
                warn: float, critical: float, now: datetime) -> bytes:
    """Bars of used % per path on the left; the trend of the first path over 24 h on the right.
    Labels are written in the language in force (the caller's, or alerts.language for posted charts)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BG)
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(12)
    draw.text((16, 10), title[:80], fill=FG, font=font)

    # Left: one horizontal bar per path.
    left, top, bar_w = 16, 48, 300
    row = max(22, min(48, (HEIGHT - top - 20) // max(1, len(usage))))
    for i, (path, percent) in enumerate(usage[:12]):
        y = top + i * row
        draw.text((left, y), path[-28:], fill=FG, font=small)
        draw.rectangle((left, y + 15, left + bar_w, y + row - 6), outline=GRID, fill=(248, 249, 250))
        filled = left + int(bar_w * max(0.0, min(percent, 100.0)) / 100)
        draw.rectangle((left, y + 15, filled, y + row - 6), fill=_colour(percent, warn, critical))
        draw.text((left + bar_w + 6, y + 12), number(percent, 1) + "%", fill=FG, font=small)

    # Right: 24 hours of the first path, with the thresholds drawn in.
    x0, y0, x1, y1 = 400, 60, WIDTH - 20, HEIGHT - 40
    draw.rectangle((x0, y0, x1, y1), outline=GRID)
    for level, colour in ((warn, WARN), (critical, CRIT)):
        line_y = y1 - (y1 - y0) * level / 100
        draw.line((x0, line_y, x1, line_y), fill=colour, width=1)
        draw.text((x0 - 34, line_y - 7), number(level) + "%", fill=colour, font=small)
    start = now - timedelta(hours=24)
    points = [
        (x0 + (x1 - x0) * max(0.0, (at - start).total_seconds()) / 86400, y1 - (y1 - y0) * min(p, 100.0) / 100)
        for at, p in trend if at >= start
    ]
    if len(points) >= 2:
        draw.line(points, fill=(13, 110, 253), width=2)
    elif points:
        px, py = points[0]
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=(13, 110, 253))
    label = _("last 24 h: {path}", path=usage[0][0][-30:]) if usage else _("last 24 h")
    draw.text((x0, y0 - 20), label, fill=FG, font=small)
    draw.text((x0, y1 + 6), _("-24 h"), fill=FG, font=small)
    now_label = _("now")
    draw.text((x1 - int(draw.textlength(now_label, font=small)), y1 + 6), now_label, fill=FG, font=small)

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
