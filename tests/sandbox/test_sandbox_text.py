from glm_agent.sandbox.text import BoundedText, collapse_cr, strip_ansi, truncate_middle


def test_strip_ansi_removes_colours_and_keeps_text():
    assert strip_ansi("\x1b[31mZeroDivisionError\x1b[39m: division by zero") == "ZeroDivisionError: division by zero"
    assert strip_ansi("\x1b]0;title\x07plain 中文") == "plain 中文"


def test_collapse_cr_keeps_last_progress_state():
    assert collapse_cr("10%\r50%\r100%\ndone\r\n") == "100%\ndone\n"


def test_truncate_middle_keeps_head_and_tail_and_says_what_was_cut():
    text = "".join(f"line {i}\n" for i in range(10_000))
    out, cut = truncate_middle(text, 1000)
    assert cut > 0 and len(out) < 1200
    assert out.startswith("line 0\n") and out.endswith("line 9999\n")
    assert f"{cut:,} characters cut" in out
    assert truncate_middle("short", 100) == ("short", 0)


def test_bounded_text_memory_is_bounded():
    buf = BoundedText(head=10, tail=5)
    for _ in range(1000):
        buf.write("abcdefghij")
    value = buf.getvalue()
    assert buf.total == 10_000 and buf.dropped == 10_000 - 15
    assert value.startswith("abcdefghij") and value.endswith("fghij")
    assert "9,985 characters dropped" in value
