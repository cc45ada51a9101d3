"""`affectllm ui`: the page's API over real HTTP with the scripted backend, the command itself, and (slow) the
page in a real headless browser with the embedded default model."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from affectllm.cli.chat import json_answer
from affectllm.cli.main import main
from affectllm.clips import clip_from_path
from affectllm.errors import InputError
from affectllm.reasoner import load_reasoner
from affectllm.settings import ClipSettings
from affectllm.ui.server import start_server
from affectllm.ui.uploads import UploadStore
from affectllm.ui.workbench import ModelSlot, Workbench

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FIRST_REPLY = (
    '<answer>{"emotions": ["surprise", "joy"], "rationale": ['
    '{"cue_id": "L1", "cue": "says no way, is this for me"}, {"cue_id": "F9", "cue": "a smile"}]}</answer>'
)
FOLLOW_UP_REPLY = "The words carry it: she says it is for her birthday [L1]."
TRANSCRIPT = "No way, is this for me? You remembered my birthday! Thank you, I love it!\n"


class Page:
    """A client of the page's API, as app.js calls it."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers={"X-Affectllm-UI": "1", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data

    def json(self, method: str, path: str, payload: dict | None = None, **kw):
        status, _, data = self.request(method, path, json.dumps(payload or {}).encode(), **kw)
        return status, json.loads(data)

    def events(self, path: str, payload: dict) -> list[tuple[str, dict]]:
        status, headers, data = self.request("POST", path, json.dumps(payload).encode())
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream"), data
        out = []
        for block in data.decode("utf-8").split("\n\n"):
            if block.strip():
                kind = block.split("\n")[0].removeprefix("event: ")
                out.append((kind, json.loads(block.split("\n")[1].removeprefix("data: "))))
        return out

    def upload(self, name: str, content: bytes) -> str:
        status, _, data = self.request("POST", f"/api/files?name={name}", content)
        assert status == 200, data
        return json.loads(data)["file"]

    def open(self, **tokens: str) -> list[tuple[str, dict]]:
        return self.events("/api/clips", tokens)

    def ask(self, key: str, question: str | None) -> list[tuple[str, dict]]:
        return self.events(f"/api/clips/{key}/ask", {"question": question})


def _serve(replies: list[str], settings: ClipSettings, max_bytes: int = 50_000_000):
    reasoner_box: list = []

    def load():
        reasoner_box.append(load_reasoner(backend="mock", replies=replies))
        return reasoner_box[0]

    workbench = Workbench(ModelSlot(load), settings, UploadStore(max_bytes))
    server = start_server(workbench, "127.0.0.1", 0)
    workbench.model.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, workbench, reasoner_box


@pytest.fixture
def served():
    server, workbench, reasoners = _serve([FIRST_REPLY, FOLLOW_UP_REPLY], ClipSettings(asr=None))
    yield Page(server.port), workbench, reasoners
    server.shutdown()
    server.close()


def _opened_clip(events: list[tuple[str, dict]]) -> dict:
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "clip", events
    assert "progress" in kinds  # the page says what it is doing before the clip arrives
    return events[-1][1]


def test_open_ask_and_follow_up_go_through_the_chat_session(served, tmp_path):
    page, _, reasoners = served
    clip = _opened_clip(page.open(clip=page.upload("greeting.txt", TRANSCRIPT.encode())))
    assert clip["clip"] == "greeting" and clip["media_kind"] is None
    assert [e["id"] for e in clip["evidence"]] == ["L1"] and "No way" in clip["evidence"][0]["text"]

    events = page.ask(clip["key"], "How does the speaker feel, and why?")
    kinds = [kind for kind, _ in events]
    assert kinds.count("token") > 3 and kinds[-1] == "answer"  # streamed, then the parsed answer
    # The reply as decoded: the engine stops at the stop string, which the session then restores.
    assert "".join(d["text"] for k, d in events if k == "token") == FIRST_REPLY.removesuffix("</answer>")
    answer = events[-1][1]
    assert answer["emotions"] == ["surprise", "joy"] and answer["turn"] == 0 and answer["structured"]
    assert answer["cited"] == ["L1"] and answer["ungrounded"] == ["F9"]
    assert answer["timeline_url"].endswith("timeline.png?turn=0")

    # The record is the one `affectllm chat --json` prints for the same clip, question and reply.
    path = tmp_path / "greeting.txt"
    path.write_text(TRANSCRIPT, encoding="utf-8")
    session = load_reasoner(backend="mock", replies=[FIRST_REPLY]).chat(clip_from_path(path))
    session.ask("How does the speaker feel, and why?")
    assert answer["record"] == json_answer(session.last_prediction, "greeting")
    assert reasoners[0].backend.sent[0] == session.reasoner.backend.sent[0]  # the very same prompt

    follow_up = page.ask(clip["key"], "Why joy?")[-1]
    assert follow_up[0] == "answer"
    assert follow_up[1]["answer"] == FOLLOW_UP_REPLY and follow_up[1]["cited"] == ["L1"]
    assert not follow_up[1]["structured"]
    # The follow-up carries the conversation so far, as chat's REPL sends it.
    sent = reasoners[0].backend.sent[-1]
    assert sent[-1]["role"] == "user" and "Why joy?" in str(sent[-1]["content"])
    assert any(m["role"] == "assistant" and "surprise" in str(m["content"]) for m in sent)

    again = page.ask(clip["key"], "  ")[-1]
    assert again == ("error", {"message": "type a question (the first answer already analysed the clip)",
                               "elapsed": again[1]["elapsed"]})  # fmt: skip

    # A reloaded page gets the clip and its answers back.
    status, info = page.json("GET", "/api/info")
    assert status == 200 and info["model"]["status"] == "ready" and info["model"]["backend"] == "mock"
    assert [a["turn"] for a in info["clips"][0]["answers"]] == [0, 1]


def test_a_ranked_first_answer_arrives_whole_with_the_ranked_emotions(tiny_lm_dir, tmp_path):
    """Likelihood decoding (the embedded default's for open vocabulary) has no decoded stream: the page gets
    the whole answer as one piece, then the parsed answer with the emotions the scoring chose."""
    from affectllm.backends import GenerationConfig
    from affectllm.settings import PromptSettings

    words = ("happy", "sad", "angry")
    settings = PromptSettings(decoding="likelihood", candidates=words, max_emotions=3, min_ratio=0.0)

    def load():
        return load_reasoner(
            backend="transformers",
            model=str(tiny_lm_dir),
            adapter="none",
            device="cpu",
            settings=settings,
            generation=GenerationConfig(max_new_tokens=8, stop=["</answer>"]),
        )

    workbench = Workbench(ModelSlot(load), ClipSettings(asr=None), UploadStore(1_000_000))
    server = start_server(workbench, "127.0.0.1", 0)
    workbench.model.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = Page(server.port)
        clip = _opened_clip(page.open(clip=page.upload("greeting.txt", TRANSCRIPT.encode())))
        events = page.ask(clip["key"], None)
        tokens = [d["text"] for k, d in events if k == "token"]
        answer = events[-1][1]
        assert events[-1][0] == "answer" and len(tokens) == 1, events
        assert tokens[0].startswith('<answer>{"emotions": ["')  # the contract, the chosen emotions first
        assert sorted(answer["emotions"]) == sorted(words)  # min_ratio 0: every candidate, best first
        assert answer["record"]["label_scores"].keys() == set(words)
    finally:
        server.shutdown()
        server.close()


def test_timeline_png_is_redrawn_with_an_answer_s_citations(served):
    page, _, _ = served
    clip = _opened_clip(page.open(clip=page.upload("greeting.txt", TRANSCRIPT.encode())))
    status, headers, plain = page.request("GET", clip["timeline_url"])
    assert status == 200 and headers["Content-Type"] == "image/png" and plain.startswith(b"\x89PNG")
    answer = page.ask(clip["key"], None)[-1][1]  # no question: the default analysis, as chat without one
    status, _, cited = page.request("GET", answer["timeline_url"])
    assert status == 200 and cited.startswith(b"\x89PNG") and cited != plain
    status, _, data = page.request("GET", f"/api/clips/{clip['key']}/timeline.png?turn=5")
    assert status == 400 and "has no answer 5" in json.loads(data)["error"]


def test_a_bad_file_gets_the_cli_s_message_and_the_page_keeps_working(served, tmp_path):
    page, _, _ = served
    events = page.open(clip=page.upload("broken.mp4", b"this is not a video"))
    assert events[-1][0] == "error"
    message = events[-1][1]["message"]
    # The message the CLI prints for the same file, naming the file as the user uploaded it.
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(InputError) as cli_error:
        clip_from_path(bad, ClipSettings(asr=None))
    assert message == str(cli_error.value).replace(str(bad.resolve()), "broken.mp4").replace(
        str(bad), "broken.mp4"
    )
    assert "affectllm-ui-" not in message  # never the private upload folder

    empty = page.open(clip=page.upload("empty.txt", b"  \n"))
    assert empty[-1][0] == "error" and empty[-1][1]["message"].startswith("empty.txt: ")
    assert page.open(clip="0123456789abcdef")[-1][1]["message"].startswith("no uploaded file")
    assert page.open()[-1][1]["message"] == "choose a video, audio or transcript file to open"
    status, data = page.json("POST", "/api/clips/ffffff/ask", {"question": "hi"})
    assert status == 400 and "no open clip" in data["error"]

    # ...and the next clip opens and is answered as usual.
    clip = _opened_clip(page.open(clip=page.upload("greeting.txt", TRANSCRIPT.encode())))
    assert page.ask(clip["key"], "How?")[-1][0] == "answer"


def test_uploads_are_size_limited_and_removed_when_the_server_stops():
    server, workbench, _ = _serve([FIRST_REPLY], ClipSettings(asr=None), max_bytes=1000)
    page = Page(server.port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.putrequest("POST", "/api/files?name=huge.mp4")
        conn.putheader("X-Affectllm-UI", "1")
        conn.putheader("Content-Length", str(5_000_000_000))
        conn.endheaders()
        conn.send(b"x" * 100)  # refused on the declared size, before the body is read
        response = conn.getresponse()
        error = json.loads(response.read())["error"]
        assert response.status == 413
        assert (
            error
            == "huge.mp4: the file is 5000.0 MB; uploads are limited to 0.001 MB (affectllm ui --max-upload-mb)"
        )
        conn.close()
        page.upload("small.txt", TRANSCRIPT.encode())
        root = workbench.uploads.root
        assert len(list(root.iterdir())) == 1 and oct(root.stat().st_mode & 0o777) == "0o700"
    finally:
        server.shutdown()
        server.close()
    assert not root.exists()


def test_the_api_refuses_cross_site_requests(served):
    page, _, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
    conn.request("POST", "/api/files?name=a.txt", body=b"hi")  # a form on another site cannot add the header
    response = conn.getresponse()
    assert response.status == 403 and "X-Affectllm-UI" in json.loads(response.read())["error"]
    status, _, _ = page.request("GET", "/api/info", headers={"Host": f"attacker.example:{page.port}"})
    assert status == 403  # DNS rebinding: a foreign name for the loopback address
    status, _, body = page.request("GET", "/")
    assert status == 200 and b'<script src="/static/app.js">' in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # nothing loads from the network


def test_media_is_served_with_byte_ranges_for_the_player():
    server, _, _ = _serve([FIRST_REPLY], ClipSettings(extractors=("face",), asr=None))
    page = Page(server.port)
    try:
        video = (EXAMPLES / "surprise_joy.mp4").read_bytes()
        clip = _opened_clip(
            page.open(
                clip=page.upload("surprise_joy.mp4", video),
                au_csv=page.upload("faces.csv", (EXAMPLES / "surprise_joy.openface.csv").read_bytes()),
            )
        )
        assert clip["media_kind"] == "video" and any(e["modality"] == "facial" for e in clip["evidence"])
        status, headers, body = page.request("GET", clip["media_url"], headers={"Range": "bytes=100-199"})
        assert status == 206 and body == video[100:200]
        assert (
            headers["Content-Range"] == f"bytes 100-199/{len(video)}"
            and headers["Content-Type"] == "video/mp4"
        )
        status, _, body = page.request("GET", clip["media_url"])
        assert status == 200 and body == video
    finally:
        server.shutdown()
        server.close()


def _start_cli(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "AFFECTLLM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "affectllm", "ui", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    line = proc.stdout.readline()
    if not line.startswith("affectllm ui: http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"no URL printed: {line!r} {proc.stderr.read()}")
    return proc, line.split()[2]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()


def test_the_command_serves_a_clip_named_on_the_command_line(tmp_path):
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps(FIRST_REPLY) + "\n", encoding="utf-8")
    proc, url = _start_cli(
        [str(EXAMPLES / "surprise_joy.txt"), "--backend", "mock", "--model", str(replies), "-q"], tmp_path
    )
    try:
        page = Page(int(url.rstrip("/").rsplit(":", 1)[1]))
        for _ in range(100):
            _, info = page.json("GET", "/api/info")
            if info["model"]["status"] != "loading":
                break
            time.sleep(0.1)
        assert info["model"]["status"] == "ready" and [c["clip"] for c in info["clips"]] == ["surprise_joy"]
        answer = page.ask(info["clips"][0]["key"], "How does the speaker feel?")[-1]
        assert answer[0] == "answer" and answer[1]["emotions"] == ["surprise", "joy"]
    finally:
        _stop(proc)


def test_the_command_refuses_bad_options_like_chat(capsys, tmp_path):
    assert main(["ui", str(tmp_path / "missing.mp4"), "--backend", "mock", "--port", "0"]) == 2
    assert "missing.mp4: clip not found" in capsys.readouterr().err
    assert main(["ui", "--au-csv", "x.csv", "--port", "0"]) == 2
    assert "name the clip too" in capsys.readouterr().err
    assert main(["ui", "--max-upload-mb", "0"]) == 2
    assert main(["ui", "--base-url", "http://127.0.0.1:1/v1", "--backend", "mock"]) == 2
    assert "--base-url needs --backend openai" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ in a browser
def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install 'affectllm[ui-test]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_in_a_real_browser_with_the_embedded_default(tmp_path):
    """A person's session: open the example clip (with its AU CSV and captions), ask, read the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    proc, url = _start_cli([], tmp_path)
    try:
        browser.get(url)
        assert browser.title == "affectllm"
        # A file that is not a clip: the CLI's message, in the page, which keeps working.
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"this is not a video")
        browser.find_element(By.ID, "clip-file").send_keys(str(broken))
        browser.find_element(By.ID, "open-button").click()
        error_box = browser.find_element(By.ID, "open-error")
        WebDriverWait(browser, 600).until(lambda _: error_box.is_displayed())
        assert error_box.text.startswith("broken.mp4: ") and "cannot decode media" in error_box.text

        browser.find_element(By.CSS_SELECTOR, "details summary").click()
        browser.find_element(By.ID, "clip-file").send_keys(str(EXAMPLES / "surprise_joy.mp4"))
        browser.find_element(By.ID, "au-file").send_keys(str(EXAMPLES / "surprise_joy.openface.csv"))
        browser.find_element(By.ID, "captions-file").send_keys(str(EXAMPLES / "surprise_joy.captions.json"))
        browser.find_element(By.ID, "open-button").click()
        WebDriverWait(browser, 1200).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#evidence li")))
        assert not error_box.is_displayed()
        assert browser.find_element(By.CSS_SELECTOR, "#player video").get_attribute("src").endswith("/media")
        evidence_ids = [
            li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "#evidence li")
        ]
        assert any(i.startswith("A") for i in evidence_ids) and any(i.startswith("F") for i in evidence_ids)

        question = browser.find_element(By.ID, "question")
        question.send_keys("How does the speaker feel, and why?")
        browser.find_element(By.ID, "ask-button").click()
        WebDriverWait(browser, 1800).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.model[data-turn='0'], .msg.error"))
        )
        errors = browser.find_elements(By.CSS_SELECTOR, ".msg.error")
        assert not errors, errors[0].text
        emotions = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".msg.model .emotion")]
        assert emotions and all(emotions)
        rationale = browser.find_elements(By.CSS_SELECTOR, ".msg.model .rationale li")
        assert rationale and browser.find_element(By.CSS_SELECTOR, ".msg.model .prose").text
        timeline = browser.find_element(By.ID, "timeline")
        WebDriverWait(browser, 300).until(
            lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", timeline)
        )
        assert timeline.get_attribute("src").endswith("timeline.png?turn=0") and timeline.is_displayed()
        # The evidence the answer cites is highlighted in the evidence list.
        rationale_ids = [s.text for s in browser.find_elements(By.CSS_SELECTOR, ".msg.model .rationale .cid")]
        highlighted = {
            li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "#evidence li.cited")
        }
        assert {i for i in rationale_ids if i in evidence_ids} == highlighted

        # The whole page in one picture: a viewport as tall as the document.
        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        metrics = {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        shot = tmp_path / "ui_screenshot.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("AFFECTLLM_UI_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["AFFECTLLM_UI_SCREENSHOT"])
    finally:
        browser.quit()
        _stop(proc)
