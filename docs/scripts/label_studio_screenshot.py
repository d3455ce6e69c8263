"""Photographs Label Studio's labeling page of one task with headless Chromium: ``docs/label_studio_query.png``.

Needs ``playwright`` (pip) and a Chromium (Debian's ``apt-get install chromium``: playwright's own browser download
needs the internet). Made with a run of ``configs/lab_digits.yaml --config configs/oracles/label_studio.yaml``
stopped after round 0, its project's first task open::

    python docs/scripts/label_studio_screenshot.py http://localhost:8080 <project id> <task id> \\
        docs/label_studio_query.png

The Label Studio login comes from ``LABEL_STUDIO_USERNAME`` and ``LABEL_STUDIO_PASSWORD``.
"""

from __future__ import annotations

import os
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    url, project, task, out = sys.argv[1:5]
    with sync_playwright() as playwright:
        chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # e.g. run as root
        page = browser.new_page(viewport={"width": 1280, "height": 1150})
        page.goto(f"{url}/user/login/")
        page.fill("input[name=email]", os.environ["LABEL_STUDIO_USERNAME"])
        page.fill("input[name=password]", os.environ["LABEL_STUDIO_PASSWORD"])
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{url}/projects/{project}/data?task={task}")
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(8000)  # the labeling page draws the image and the pre-annotation after the page loads
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main()
