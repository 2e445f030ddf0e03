"""Charts draw Chinese: paths and titles in CJK come out as glyphs, not the font's missing-glyph box."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image, ImageDraw, ImageFont

from bot.alerts.charts import cjk_font_path, usage_chart

CHINESE = "磁盘使用服务器数据"


def require_cjk_font() -> str:
    path = cjk_font_path()
    if path is None:
        message = "no CJK font is installed: apt-get install fonts-wqy-microhei (or fonts-noto-cjk)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip("!!! SKIPPING the CJK chart test: " + message)
    return path


def ink(font: ImageFont.FreeTypeFont, text: str) -> bytes:
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).text((4, 4), text, fill=255, font=font)
    return image.tobytes()


def test_chinese_characters_are_drawn_as_their_own_glyphs() -> None:
    font = ImageFont.truetype(require_cjk_font(), 32)
    missing = ink(font, "\uffff")  # what the font draws for a character it lacks
    shapes = {ink(font, ch) for ch in CHINESE}
    assert len(shapes) == len(set(CHINESE)), "some characters share one shape (boxes?)"
    assert missing not in shapes
    assert all(any(shape) for shape in shapes), "a character drew nothing"


def test_a_chart_titled_in_chinese_differs_from_one_titled_in_missing_glyphs() -> None:
    require_cjk_font()
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    trend = [(now - timedelta(hours=h), 80.0 + h / 10) for h in range(24)]

    def chart(title: str, path: str) -> Image.Image:
        png = usage_chart(title, [(path, 85.0)], trend, 80, 90, now)
        assert png.startswith(b"\x89PNG")
        return Image.open(io.BytesIO(png)).convert("L")

    chinese = chart("警告 web-01:/数据 磁盘使用", "/数据")
    boxes = chart("\uffff\uffff web-01:/\uffff\uffff \uffff\uffff\uffff\uffff", "/\uffff\uffff")
    assert chinese.tobytes() != boxes.tobytes()
