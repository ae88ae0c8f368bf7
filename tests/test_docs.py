"The documentation site builds offline from the notebooks and renders in headless Chromium without console errors."
import functools, html, http.server, os, re, shutil, socketserver, subprocess, sys, tempfile, threading
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT/'tests'/'artifacts'

@pytest.fixture(scope='module')
def site():
    out = Path(tempfile.mkdtemp(prefix='fastdet_site_'))  # not pytest's tmp_path: concurrent pytest runs prune those
    # executes every notebook, `slow` cells included, with nbdev-test: this is the suite's notebook test too
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'build_docs.py'), '--out', str(out), '--slow'], capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    n_nbs = len([p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts])
    assert f'executed {n_nbs} notebooks' in r.stdout, r.stdout
    yield out
    shutil.rmtree(out, ignore_errors=True)

@pytest.fixture(scope='module')
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(site))
    httpd = socketserver.TCPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()

@pytest.fixture(scope='module')
def browser():
    chrome, driver = shutil.which('chromium'), shutil.which('chromedriver')
    if not (chrome and driver): pytest.fail('headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run does)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--window-size=1280,1600'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    b = webdriver.Chrome(service=Service(driver), options=opts)
    yield b
    b.quit()

def _open(browser, url):
    browser.get(url)
    errors = [e for e in browser.get_log('browser') if e['level'] == 'SEVERE']
    assert not errors, f'console errors on {url}: {errors}'
    return browser.find_element('tag name', 'body').text

def test_site_pages(site, server, browser):
    SHOTS.mkdir(exist_ok=True)
    home = _open(browser, f'{server}/index.html')
    assert 'fastdet' in home and 'Quick start' in home
    browser.save_screenshot(str(SHOTS/'docs_home.png'))
    print(f'\nscreenshot of the home page: {SHOTS/"docs_home.png"}')
    api = _open(browser, f'{server}/learner.html#ssd_learner')
    assert 'ssd_learner' in api and 'def ssd_learner' in api
    browser.save_screenshot(str(SHOTS/'docs_ssd_learner.png'))
    print(f'screenshot of the ssd_learner API entry: {SHOTS/"docs_ssd_learner.png"}')
    tutorials = sorted(p.name for p in site.glob('tutorial*.html'))
    assert len(tutorials) >= 10, tutorials
    for page in tutorials:  # each page whole, as a reader scrolls through it
        text = _open(browser, f'{server}/{page}')
        assert len(text) > 500, page
        h = browser.execute_script('return document.documentElement.scrollHeight')
        browser.set_window_size(1280, min(h, 16000))
        shot = SHOTS/f'docs_{Path(page).stem}.png'
        browser.save_screenshot(str(shot))
        print(f'screenshot of {page}: {shot}')
    browser.set_window_size(1280, 1600)
    # navigation: the home page links to every API page and tutorial
    links = {a.get_attribute('href').rsplit('/', 1)[-1].split('#')[0] for a in browser.find_elements('css selector', 'nav a[href]')}
    assert {'boxes.html', 'learner.html', *tutorials} <= links, links

def _links(html:str)->list:
    return re.findall(r'(?:href|src)="([^"]*)"', html)

def site_problems(site:Path)->dict:
    "Per page: stderr output blocks (warnings shown to readers), absolute links (break when opened from disk), links to missing files."
    out = {}
    for page in sorted(site.rglob('*.html')):
        html, bad = page.read_text(), []
        n_err = len(re.findall(r'<div[^>]*data-mime-type="application/vnd\.jupyter\.stderr"', html))  # (the CSS names it too)
        if n_err: bad.append(f"{n_err} stderr output blocks")
        for link in _links(html):
            if link.startswith(('http://', 'https://', 'mailto:', 'data:', '#', 'javascript:')) or not link: continue
            if link.startswith('/'): bad.append(f'absolute link {link}'); continue
            target = (page.parent/link.split('#')[0].split('?')[0]).resolve()
            if link.split('#')[0] and not target.exists(): bad.append(f'broken link {link}')
        if bad: out[str(page.relative_to(site))] = bad
    return out

def anchor_problems(site:Path)->list:
    "Links into a page of the site whose anchor (`page.html#id`, `#id`) names no element of that page."
    ids = {p.name: set(re.findall(r'\sid="([^"]+)"', p.read_text())) for p in site.glob('*.html')}
    out = []
    for p in sorted(site.glob('*.html')):
        for link in re.findall(r'href="([^"]*#[^"]+)"', p.read_text()):
            if link.startswith(('http://', 'https://', 'mailto:')): continue
            page, _, anchor = link.partition('#')
            page = page or p.name
            if page in ids and html.unescape(anchor) not in ids[page]: out.append(f'{p.name}: {link}')
    return out

_OUTPUT = re.compile(r'<div class="[^"]*jp-OutputArea-output[^"]*"[^>]*>(.*?)</div>', re.S)
_BAD_OUTPUT = {'a progress bar': re.compile(r'█|\d+\.\d\d% \[\d+/\d+'),
               'a machine path': re.compile(r'(?<![\w.])/(?:tmp|work|home|root|usr|var)/|site-packages'),
               'an object repr': re.compile(r'<(?:Axes|matplotlib|Figure)\b|\bobject at 0x[0-9a-f]+')}

def output_problems(site:Path, data=None)->dict:
    "Per page: output blocks that show a text progress bar, a machine path (of this machine, or of `data`) or an object repr."
    out = {}
    for p in sorted(site.glob('*.html')):
        texts = [html.unescape(re.sub('<[^>]+>', '', b)) for b in _OUTPUT.findall(p.read_text())]  # what a reader sees (not the images' data)
        found = lambda what, rx, t: rx.search(t) or (what == 'a machine path' and data and str(data) in t)
        bad = [f'{what}: {t.strip()[:120]!r}' for t in texts for what, rx in _BAD_OUTPUT.items() if found(what, rx, t)]
        if bad: out[p.name] = bad
    return out

def test_the_check_finds_what_it_looks_for(tmp_path):
    (tmp_path/'a.html').write_text('<a href="/index.html">x</a><a href="b.html#y">y</a><img src="missing.png">'
                                   '<div data-mime-type="application/vnd.jupyter.stderr">warn</div>')
    (tmp_path/'b.html').write_text('<a href="a.html">a</a><a href="https://example.org/x">e</a>')
    assert site_problems(tmp_path) == {'a.html': ['1 stderr output blocks', 'absolute link /index.html', 'broken link missing.png']}

def test_the_anchor_and_output_checks_find_what_they_look_for(tmp_path):
    (tmp_path/'a.html').write_text('<h2 id="x">x</h2><a href="#x">ok</a><a href="#y">bad</a><a href="b.html#z">ok</a><a href="b.html#w">bad</a>'
        '<div class="jp-RenderedText jp-OutputArea-output"><pre>Epoch 1/3 : |████---| 10.00% [1/10 00:01]</pre></div></div>'
        '<div class="jp-RenderedText jp-OutputArea-output"><pre>wrote /tmp/tmpab12/model.pth</pre></div></div>'
        '<div class="jp-RenderedText jp-OutputArea-output"><pre>[&lt;Axes: &gt;]</pre></div></div>'
        '<div class="jp-RenderedText jp-OutputArea-output"><pre>AP 0.58 [0.55, 0.61] in runs/train/model.pth</pre></div></div>')
    (tmp_path/'b.html').write_text('<div id="z"></div>')
    assert anchor_problems(tmp_path) == ['a.html: #y', 'a.html: b.html#w']
    assert [b.split(':')[0] for b in output_problems(tmp_path)['a.html']] == ['a progress bar', 'a machine path', 'an object repr']

def test_anchors_resolve_and_outputs_are_clean(site):
    "Every in-site anchor names an element of its page; no output shows a text progress bar, a machine path or an object repr."
    assert anchor_problems(site) == []
    assert output_problems(site, os.environ.get('FASTDET_TEST_DATA')) == {}

def test_no_warnings_and_no_broken_links(site):
    "14.6: no stderr block (warnings) in any rendered output; every link relative and to a file of the site, 404.html included."
    assert (site/'404.html').is_file()
    assert site_problems(site) == {}

def test_names_from_other_libraries_link_to_their_docs(site):
    "torchvision, timm, effdet and pycocotools names in the prose link to those projects' pages (fastai's go to docs.fast.ai)."
    want = {'boxes.html': 'https://pytorch.org/vision/stable/generated/torchvision.ops.batched_nms.html',
            'data.augment.html': 'https://pytorch.org/vision/stable/generated/torchvision.transforms.v2.RandomIoUCrop.html',
            'models.ssd.html': 'https://pytorch.org/vision/stable/models/generated/torchvision.models.detection.ssd300_vgg16.html',
            'ema.html': 'https://github.com/huggingface/pytorch-image-models/blob/main/timm/utils/model_ema.py',
            'anchors.efficientdet.html': 'https://github.com/rwightman/efficientdet-pytorch/blob/master/effdet/anchors.py',
            'evaluation.html': 'https://github.com/cocodataset/cocoapi/blob/master/PythonAPI/pycocotools/cocoeval.py',
            'learner.html': 'https://docs.fast.ai/learner.html#learner'}
    missing = {page: url for page, url in want.items() if url not in _links((site/page).read_text())}
    assert missing == {}, missing

def test_subtitles_unquoted_and_code_visible(site, server, browser):
    "14.6: front-matter subtitles without literal quotes; long commands wrap or scroll, never cut off."
    text = _open(browser, f'{server}/learner.html')
    first = [l for l in text.splitlines() if 'DetLearner' in l][0]
    assert not first.startswith(("'", '"')) and "''" not in text, first
    for page in ('index.html', 'cli.html'):
        _open(browser, f'{server}/{page}')
        hidden = browser.execute_script("""return [...document.querySelectorAll('pre')].filter(p => p.scrollWidth > p.clientWidth + 1
            && !['auto', 'scroll'].includes(getComputedStyle(p).overflowX)).map(p => p.textContent.slice(0, 60));""")
        assert hidden == [], (page, hidden)

def test_symbols_found_from_disk(site, browser):
    "The API index opened from disk (file://): its filter box finds `COCOMetric`, linked to its entry."
    browser.get((site/'api_index.html').as_uri())
    browser.find_element('id', 'symbol-filter').send_keys('COCOMetric')
    rows = [r for r in browser.find_elements('css selector', '#symbols tbody tr') if r.is_displayed()]
    assert rows and all('cocometric' in r.text.lower() for r in rows), [r.text for r in rows]
    link = rows[0].find_element('tag name', 'a').get_attribute('href')
    assert rows[0].text.startswith('COCOMetric') and link.endswith('metrics.html#cocometric'), (rows[0].text, link)
    n_all = len(browser.find_elements('css selector', '#symbols tbody tr'))
    assert n_all > 150, n_all  # every public name

def test_search_from_disk(site, browser):
    "mkdocs-material's search, opened from disk (file://): the offline plugin's inlined index and the iframe worker shim find `COCOMetric`, first on its API entry."
    import time
    browser.get((site/'index.html').as_uri())
    box = browser.find_element('css selector', 'input.md-search__input')
    box.click(); box.send_keys('COCOMetric')
    for _ in range(50):  # the worker indexes the site, then answers
        items = browser.find_elements('css selector', '.md-search-result__item')
        if items: break
        time.sleep(.2)
    assert items, browser.find_element('css selector', '.md-search-result__meta').text
    links = [a.get_attribute('href') for a in items[0].find_elements('tag name', 'a')]
    assert links[0].startswith('file://') and links[0].endswith('metrics.html'), links  # the page, then its sections
    assert any(l.endswith('metrics.html#cocometric') for l in links), links
    assert not [e for e in browser.get_log('browser') if e['level'] == 'SEVERE']
