"""The example Django site in a real browser: headless Chromium, driven by
Selenium through Debian's chromium-driver, against the real tandem.

Logs in to the admin, adds and edits an entry, signs the guestbook through
the CSRF-protected form, uploads a file and fetches it back from /media/,
and checks that the admin's stylesheet (a hashed file collected by
ManifestStaticFilesStorage and served by tandem's static route) was applied.

`scripts/install-test-deps.sh` installs chromium and chromium-driver from
Debian. On failure the test's screenshot is saved under a temp directory and
its path printed.
"""

import os
import re
import shutil
import tempfile
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import serving
from django_site import ADMIN_PASSWORD, ADMIN_USER, APP, require_static, server_args

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# Without these, Chromium waits on network services it can't reach here, or
# on a GPU and a big /dev/shm it doesn't have.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
WAIT = 15  # seconds for a page element to appear


def _missing_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return missing


@pytest.fixture(scope="module", autouse=True)
def _browser_available():
    missing = _missing_browser()
    if missing:
        message = f"missing {', '.join(missing)}: run scripts/install-test-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def site(django_site):
    with serving(APP, *server_args(), cwd=django_site, workers=2) as t:
        yield t


@pytest.fixture
def browser(request, tmp_path_factory):
    """A fresh headless Chromium (its own profile); screenshot on failure."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tandem-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            shots = tmp_path_factory.mktemp("screenshots")
            path = shots / f"{request.node.name}.png"
            try:
                driver.save_screenshot(str(path))
                print(f"\nscreenshot of the failed test: {path}\npage: {driver.current_url}")
            except Exception as e:  # the browser may be what failed
                print(f"\nno screenshot ({e})")
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, css):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def submit(driver, form_css, fields):
    """Fills a form's fields by name and submits it with its submit button."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    form = wait_for(driver, form_css)
    for name, value in fields.items():
        field = form.find_element(By.NAME, name)  # a file input takes a path
        if field.get_attribute("type") != "file":
            field.clear()
        field.send_keys(value)
    old = driver.find_element(By.TAG_NAME, "html")
    form.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    WebDriverWait(driver, WAIT).until(lambda d: gone(old))  # the next page loaded


def gone(element):
    """Whether `element` left the document. chromedriver reports a node of
    an unloaded page either as stale or, in a race, as an inspector error."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as err:
        return "does not belong to the document" in str(err)
    return False


def log_in(driver, site):
    driver.get(site.url + "/admin/login/?next=/admin/")
    submit(driver, "#login-form", {"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert wait_for(driver, "#user-tools"), driver.page_source[:1000]


def test_admin_stylesheet_is_applied(browser, site):
    """The admin's hashed base.css came from the static route and styled the page."""
    browser.get(site.url + "/admin/login/")
    header = wait_for(browser, "#header")
    hrefs = [
        link.get_attribute("href")
        for link in browser.find_elements("css selector", "link[rel=stylesheet]")
    ]
    assert any(re.search(r"/static/admin/css/base\.[0-9a-f]{12}\.css$", h) for h in hrefs), hrefs
    require_static()
    style = browser.execute_script(
        "const s = getComputedStyle(arguments[0]);"
        "const root = getComputedStyle(document.documentElement);"
        "return {display: s.display, bg: s.backgroundColor,"
        "        secondary: root.getPropertyValue('--secondary').trim()};",
        header,
    )
    # Unstyled, #header is a transparent block and --secondary is undefined;
    # base.css makes it a flex box painted with --header-bg (= --secondary).
    assert style["display"] == "flex", style
    assert style["bg"] not in ("rgba(0, 0, 0, 0)", "transparent"), style
    assert style["secondary"].startswith("#"), style


def test_admin_log_in_add_and_edit_an_entry(browser, site):
    from selenium.webdriver.common.by import By

    log_in(browser, site)
    name = f"admin-{uuid.uuid4().hex[:8]}"
    browser.get(site.url + "/admin/guestbook/entry/add/")
    submit(browser, "#entry_form", {"name": name, "message": "added in the admin"})
    assert "was added successfully" in wait_for(browser, ".messagelist").text

    browser.find_element(By.LINK_TEXT, f"{name}: added in the admin").click()
    wait_for(browser, "#entry_form")
    assert "/change/" in browser.current_url
    submit(browser, "#entry_form", {"message": "edited in the admin"})
    assert "was changed successfully" in wait_for(browser, ".messagelist").text

    browser.get(site.url + "/")
    entries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".entry")]
    mine = [e for e in entries if name in e]
    assert len(mine) == 1 and "edited in the admin" in mine[0], entries


def test_sign_the_guestbook_through_the_csrf_form(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/sign/")
    token = wait_for(browser, "input[name=csrfmiddlewaretoken]").get_attribute("value")
    assert token
    name = f"browser-{uuid.uuid4().hex[:8]}"
    submit(browser, "#sign-form", {"name": name, "message": "signed from Chromium"})
    assert browser.current_url.rstrip("/") == site.url, browser.current_url
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".entry-name")]
    assert name in names, names


def test_upload_a_file_and_fetch_it_back_from_media(browser, site, tmp_path):
    from selenium.webdriver.common.by import By

    content = f"hello from the browser test {uuid.uuid4()}\n".encode() * 50
    upload = Path(tmp_path) / f"notes-{uuid.uuid4().hex[:6]}.txt"
    upload.write_bytes(content)
    browser.get(site.url + "/upload/")
    submit(browser, "#upload-form", {"file": str(upload), "description": "from Chromium"})
    links = browser.find_elements(By.CSS_SELECTOR, "a.attachment")
    hrefs = [a.get_attribute("href") for a in links if upload.stem in a.text]
    assert len(hrefs) == 1, [a.text for a in links]
    assert hrefs[0].startswith(site.url + "/media/uploads/"), hrefs
    require_static()
    with urllib.request.urlopen(hrefs[0], timeout=15) as r:
        assert r.status == 200
        assert r.read() == content
    browser.get(hrefs[0])  # and the browser sees the same text
    assert "hello from the browser test" in browser.find_element(By.TAG_NAME, "body").text
