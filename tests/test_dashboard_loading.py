"""The dashboard's markdown renderer is safe; it and the templates load only when a page
renders (a server that only answers the API never imports them)."""

from __future__ import annotations

from kennel.dashboard.markdown import LINK_REL, render_markdown
from server import python_lines


def test_markdown_is_rendered_without_raw_html_or_unsafe_links() -> None:
    html = render_markdown("**hi** <script>x()</script> [a](https://a.test) [b](javascript:x())")
    assert "<strong>hi</strong>" in html
    assert "<script>" not in html
    assert f'<a href="https://a.test" rel="{LINK_REL}" target="_blank">a</a>' in html
    assert "javascript:" not in html.replace("[b](javascript:x())", "")


def test_the_app_loads_markdown_it_only_when_markdown_is_rendered() -> None:
    script = (
        "import sys\n"
        "import kennel.app\n"
        "print('markdown_it' in sys.modules)\n"
        "from kennel.dashboard.markdown import render_markdown\n"
        "render_markdown('*x*')\n"
        "print('markdown_it' in sys.modules)\n"
    )
    assert python_lines(script) == ["False", "True"]


def test_the_app_loads_jinja2_only_when_a_page_is_rendered() -> None:
    script = (
        "import sys\n"
        "import kennel.app\n"
        "print('jinja2' in sys.modules)\n"
        "from kennel.dashboard.render import environment\n"
        "environment().get_template('signin.html')\n"
        "print('jinja2' in sys.modules)\n"
    )
    assert python_lines(script) == ["False", "True"]
