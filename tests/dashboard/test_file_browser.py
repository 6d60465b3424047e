"""The dashboard's file browser (issue 14) over HTTP against a real `pocketfleet serve`: the
three folders, an upload into pb_public served by the instance at `/`, the text editor,
rename, delete, new folder, downloads that never render, refusals shown on the page, and
another account's 404; one browser test of the upload and the listing."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Browsing, shot, sign_up_in_browser
from tests.support.ports import free_port
from tests.support.server import ServeProcess, running_server
from tests.support.web import WebPerson

NAME = "files-site"
MAX_FILE_MB = 2
SFTP_PORT = free_port()


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    # a small apex limit: uploads and saves pass it through their own limits
    env = {
        "PF_FILES_MAX_FILE_MB": str(MAX_FILE_MB),
        "PF_MAX_BODY_BYTES": "4096",
        "PF_SFTP": f"127.0.0.1:{SFTP_PORT}",
    }
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def owner(server: ServeProcess) -> Iterator[WebPerson]:
    person = WebPerson(server, "fay@example.com")
    assert person.api.post("/api/instances", json={"name": NAME}).status_code == 201
    started = person.api.post(f"/api/instances/{NAME}/start")
    assert started.status_code == 200 and started.json()["status"] == "running", started.text
    yield person
    person.close()


def files(path: str = "") -> str:
    return f"/instances/{NAME}/files" + (f"?path={path}" if path else "")


def names_listed(page: httpx.Response) -> list[str]:
    return [
        html.unescape(n)
        for n in re.findall(r'<th scope="row" class="mono">\s*<a[^>]*>([^<]+)</a>', page.text)
    ]


def error_of(page: httpx.Response) -> str:
    found = re.search(r'id="files-error" role="alert">([^<]+)<', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


def textarea_of(page: httpx.Response) -> str:
    """The editor's text as the browser takes it (the newline after the tag is dropped)."""
    found = re.search(r"<textarea[^>]*>\n(.*?)</textarea>", page.text, re.S)
    assert found, page.text
    return html.unescape(found.group(1))


def poll(get: Any, check: Any, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response: httpx.Response = get()
        if check(response):
            return response
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def test_the_instance_page_links_the_browser_which_lists_the_three_folders(
    owner: WebPerson,
) -> None:
    assert f'href="/instances/{NAME}/files"' in owner.page(f"/instances/{NAME}").text
    root = owner.page(files())
    assert names_listed(root) == ["pb_hooks/", "pb_migrations/", "pb_public/"]
    assert f"sftp -P {SFTP_PORT} {NAME}@127.0.0.1" in root.text
    assert 'data-copy="#sftp-line"' in root.text


def test_an_upload_into_pb_public_is_served_at_the_instance_root(
    server: ServeProcess, owner: WebPerson
) -> None:
    page = b"<!doctype html><h1>uploaded from the dashboard</h1>\n"
    big = b"x" * (MAX_FILE_MB * 1024 * 1024 - 100)  # over the apex's 4 KB, under the file limit
    answer = owner.post(
        "/instances/files-site/files/upload",
        {"path": "pb_public"},
        files=[("files", ("index.html", page, "text/html")), ("files", ("big.bin", big))],
    )
    assert answer.status_code == 200, answer.text
    assert answer.url.path == f"/instances/{NAME}/files" and "Uploaded." in answer.text
    assert names_listed(answer) == ["..", "big.bin", "index.html"]
    with server.instance_client(NAME) as site:
        served = poll(lambda: site.get("/"), lambda r: r.status_code == 200)
        assert served.content == page

    download = owner.page(f"/instances/{NAME}/files/download?path=pb_public/index.html")
    assert download.content == page
    assert download.headers["content-disposition"] == "attachment; filename*=UTF-8''index.html"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in download.headers["content-security-policy"]
    assert download.headers["content-type"] == "application/octet-stream"

    too_big = owner.post(
        "/instances/files-site/files/upload",
        {"path": "pb_public"},
        files=[("files", ("huge.bin", big + b"y" * 200))],
    )
    assert too_big.status_code == 413, too_big.text
    assert "huge.bin" not in names_listed(owner.page(files("pb_public")))


def test_edit_a_text_file_and_read_it_back(owner: WebPerson) -> None:
    hook = 'routerAdd("GET", "/hello", (e) => e.string(200, "hi"))\n'
    put = owner.api.put(f"/api/instances/{NAME}/files/pb_hooks/main.pb.js", content=hook)
    assert put.status_code == 201, put.text
    editor = owner.page(f"/instances/{NAME}/files/edit?path=pb_hooks/main.pb.js")
    assert textarea_of(editor) == hook

    changed = 'routerAdd("GET", "/hello", (e) => e.string(200, "edited"))\r\n// more\r\n'
    # 5 KB of text: over the apex's 4 KB, under the editor's own limit
    changed += "// " + "z" * 5000 + "\r\n"
    saved = owner.post(
        f"/instances/{NAME}/files/edit",
        {"path": "pb_hooks/main.pb.js", "content": changed, "newline": "lf"},
    )
    assert saved.status_code == 200, saved.text
    assert "Saved." in saved.text
    back = owner.api.get(f"/api/instances/{NAME}/files/pb_hooks/main.pb.js")
    assert back.text == changed.replace("\r\n", "\n")  # the textarea's CRLF back to LF


def test_binary_files_are_not_opened_in_the_editor(owner: WebPerson) -> None:
    put = owner.api.put(
        f"/api/instances/{NAME}/files/pb_public/logo.png", content=b"\x89PNG\x00\xff"
    )
    assert put.status_code == 201, put.text
    editor = owner.page(f"/instances/{NAME}/files/edit?path=pb_public/logo.png", 422)
    assert "not a text file" in editor.text and "<textarea" not in editor.text


def test_new_folder_rename_and_delete(owner: WebPerson) -> None:
    made = owner.post(f"/instances/{NAME}/files/mkdir", {"path": "pb_public", "folder": "assets"})
    assert made.status_code == 200 and "Folder created." in made.text
    assert "assets/" in names_listed(made)

    put = owner.api.put(f"/api/instances/{NAME}/files/pb_public/assets/a.css", content=b"a{}")
    assert put.status_code == 201
    renamed = owner.post(
        f"/instances/{NAME}/files/rename", {"path": "pb_public/assets/a.css", "to": "b.css"}
    )
    assert renamed.status_code == 200 and "Renamed." in renamed.text
    assert names_listed(renamed) == ["..", "b.css"]
    assert owner.api.get(f"/api/instances/{NAME}/files/pb_public/assets/b.css").content == b"a{}"

    gone = owner.post(f"/instances/{NAME}/files/delete", {"path": "pb_public/assets/b.css"})
    assert gone.status_code == 200 and "Deleted." in gone.text
    assert names_listed(gone) == [".."]
    folder = owner.post(f"/instances/{NAME}/files/delete", {"path": "pb_public/assets"})
    assert "assets/" not in names_listed(folder)
    assert 'data-confirm-submit="Delete pb_public/index.html?"' in folder.text


def test_paths_outside_the_code_folders_are_refused_with_a_message(owner: WebPerson) -> None:
    for path in ("pb_data", "pb_public/../pb_data", "../x", "/etc"):
        page = owner.page(files(path), 422)
        assert error_of(page), path
        assert names_listed(page) == ["pb_hooks/", "pb_migrations/", "pb_public/"]  # the root
    download = owner.page(f"/instances/{NAME}/files/download?path=pb_data/data.db", 422)
    assert download.headers["content-type"].startswith("text/html")
    refused = owner.post(
        "/instances/files-site/files/upload",
        {"path": "pb_data"},
        files=[("files", ("x.db", b"no"))],
    )
    assert refused.status_code == 422 and error_of(refused)
    renamed = owner.post(
        f"/instances/{NAME}/files/rename", {"path": "pb_public/index.html", "to": "../pb_data/x"}
    )
    assert renamed.status_code == 422 and error_of(renamed)
    assert "index.html" in names_listed(renamed)  # still on pb_public's page


def test_another_account_gets_404(server: ServeProcess, owner: WebPerson) -> None:
    other = WebPerson(server, "gus@example.com")
    try:
        for url in (
            files(),
            files("pb_public"),
            f"/instances/{NAME}/files/download?path=pb_public/index.html",
            f"/instances/{NAME}/files/edit?path=pb_public/index.html",
        ):
            assert other.page(url, 404)
        deleted = other.post(f"/instances/{NAME}/files/delete", {"path": "pb_public/index.html"})
        assert deleted.status_code == 404
        uploaded = other.post(
            f"/instances/{NAME}/files/upload",
            {"path": "pb_public"},
            files=[("files", ("index.html", b"mine"))],
        )
        assert uploaded.status_code == 404
    finally:
        other.close()
    assert owner.api.get(f"/api/instances/{NAME}/files/pb_public/index.html").status_code == 200


def test_upload_and_listing_in_a_browser(browsing: Browsing, tmp_path: Path) -> None:
    page: Page = browsing.new_page()
    sign_up_in_browser(page, "hal@example.com")
    page.get_by_label("Instance name").fill("browsed")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/instances/browsed?notice=created")
    page.get_by_role("link", name="Browse files").click()
    expect(page.locator("#files tbody th")).to_have_text(
        ["pb_hooks/", "pb_migrations/", "pb_public/"]
    )
    page.get_by_role("link", name="pb_public/").click()
    upload = tmp_path / "hello.txt"
    upload.write_text("hello from the browser\n")
    page.get_by_label("Files").set_input_files([str(upload)])
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status")).to_have_text("Uploaded.")
    expect(page.locator("#files tbody th")).to_have_text(["..", "hello.txt"])
    shot(page, "instance-files")
    page.get_by_role("link", name="hello.txt", exact=True).click()
    expect(page.get_by_label("Content")).to_have_value("hello from the browser\n")
