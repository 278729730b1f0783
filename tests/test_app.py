"""The Gradio Space app, driven in headless Chromium: load the page, run one example, see the three outputs."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import tiny_acte_config, tiny_tmt_config

from tmt_hf import ACTEModel, TMTForSemanticSegmentation, TMTImageProcessor

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_app_runs_an_example_in_headless_chromium(tmp_path):
    pytest.importorskip("gradio")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    model_dir = tmp_path / "tmt"
    acte = ACTEModel(tiny_acte_config(num_semantic_classes=19)).eval()
    TMTForSemanticSegmentation(tiny_tmt_config(num_labels=19, tma_init=1.0)).attach_acte(acte).save_pretrained(
        model_dir
    )
    TMTImageProcessor(size={"height": 64, "width": 128}).save_pretrained(model_dir)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "app.py"), "--model", str(model_dir), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        *"--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run".split(),
        *"--disable-background-networking --disable-component-update --disable-sync".split(),
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    driver = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the app exited during start-up"
                assert time.time() < deadline, "the app did not start in 120 s"
                time.sleep(0.5)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 90)
        wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, ".gallery-item"))).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        driver.find_element(By.ID, "segment-button").click()
        for output in ("segmentation", "focus-map", "regions"):
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{output} img"))
            image = driver.find_element(By.CSS_SELECTOR, f"#{output} img")
            wait.until(
                lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
            )
        driver.save_screenshot(str(tmp_path / "app.png"))
        assert (tmp_path / "app.png").stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
