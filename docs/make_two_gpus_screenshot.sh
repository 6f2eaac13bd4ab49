#!/bin/bash
# Makes docs/two_gpus_graph.png: TensorBoard's graph of AlexNet in the paper's
# two-GPU layout (python alexnet.py --devices /gpu:0,/gpu:1), colored by device,
# with conv1..fc8 expanded so that each layer's column0 and column1 show.
#
#   bash docs/make_two_gpus_screenshot.sh            # from the repository
#   PYTHON=/path/to/python bash docs/make_two_gpus_screenshot.sh
#
# No GPU needed: the graph records the devices asked for, and TensorBoard colors
# by them. Needs Chromium (Debian: apt-get install chromium) and Node.js >= 20,
# whose WebSocket drives Chromium's DevTools protocol to choose "Color by:
# Device" and expand the layers, which no TensorBoard URL can ask for.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
TENSORBOARD=${TENSORBOARD:-$(dirname "$PYTHON")/tensorboard}
CHROMIUM=${CHROMIUM:-chromium}
OUT=${OUT:-docs/two_gpus_graph.png}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

wait_for() {   # URL: until it answers, at most 3 minutes (TensorBoard starts slowly)
    "$PYTHON" - "$1" <<'PY'
import sys, time, urllib.request
for _ in range(180):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).read()
        sys.exit(0)
    except Exception:
        time.sleep(1)
sys.exit('no answer from %s' % sys.argv[1])
PY
}

"$PYTHON" alexnet.py --devices /gpu:0,/gpu:1 --graph-dir "$work/logs/two_gpus" > /dev/null

port=$(free_port)
"$TENSORBOARD" --logdir "$work/logs" --host 127.0.0.1 --port "$port" > "$work/tensorboard.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/data/plugin/graphs/info"

devtools=$(free_port)
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$work/chromium" \
    --window-size=1400,2200 --remote-debugging-port="$devtools" about:blank \
    > "$work/chromium.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$devtools/json/version"

node --no-warnings --experimental-websocket - "$devtools" \
    "http://127.0.0.1:$port/#graphs&run=two_gpus" "$OUT" <<'JS'
const fs = require('fs');
const [devtools, url, out] = process.argv.slice(2);
const LAYERS = ['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'];
const WIDTH = 1400, HEIGHT = 2200;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// In the page: the elements matching a selector, inside every shadow root too.
const ALL = `function all(selector, root = document, found = []) {
  root.querySelectorAll(selector).forEach((element) => found.push(element));
  for (const element of root.querySelectorAll('*')) {
    if (element.shadowRoot) all(selector, element.shadowRoot, found);
  }
  return found;
}`;

async function main() {
  const targets = await (await fetch(`http://127.0.0.1:${devtools}/json/list`)).json();
  const socket = new WebSocket(targets.find((target) => target.type === 'page').webSocketDebuggerUrl);
  await new Promise((resolve) => socket.addEventListener('open', resolve));
  let last = 0;
  const waiting = new Map();
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(event.data);
    if (waiting.has(message.id)) { waiting.get(message.id)(message); waiting.delete(message.id); }
  });
  const send = (method, params = {}) => new Promise((resolve) => {
    last += 1;
    waiting.set(last, resolve);
    socket.send(JSON.stringify({id: last, method, params}));
  });
  const run = async (body) => {
    const reply = await send('Runtime.evaluate', {
      expression: `(() => { ${ALL}; ${body} })()`, returnByValue: true});
    if (reply.result.exceptionDetails) throw new Error(reply.result.exceptionDetails.text);
    return reply.result.result.value;
  };

  await send('Emulation.setDeviceMetricsOverride',
             {width: WIDTH, height: HEIGHT, deviceScaleFactor: 1, mobile: false});
  await send('Page.navigate', {url});
  for (let second = 0; !(await run(`return all('g.node').length > 0;`)); second++) {
    if (second > 120) throw new Error('TensorBoard drew no graph in 2 minutes');
    await sleep(1000);
  }
  await sleep(2000);
  const clicked = await run(`
    const device = all('paper-radio-button').find((b) => b.textContent.trim() === 'Device');
    if (!device) return false;
    device.click();
    return true;`);
  if (!clicked) throw new Error('no "Device" choice under "Color by"');
  for (const layer of LAYERS) {
    // What a double click does, without selecting the node (no info card).
    const expanded = await run(`
      const graph = all('tf-graph')[0], scene = all('tf-graph-scene')[0];
      const node = graph.renderHierarchy.getRenderNodeByName('${layer}');
      if (!node) return false;
      graph.renderHierarchy.buildSubhierarchy('${layer}');
      node.expanded = true;
      scene.setNodeExpanded(node);
      return true;`);
    if (!expanded) throw new Error('no node ' + layer + ' in the graph');
    await sleep(2500);
  }
  await run(`all('tf-graph-scene')[0].fit(); return true;`);
  await sleep(6000);   // the edges' transitions end (a busy machine draws slowly)
  // The controls and legend on the left, and the main graph: not the empty right side.
  const right = await run(`
    const box = all('tf-graph-scene')[0].shadowRoot.querySelector('#root').getBoundingClientRect();
    return Math.ceil(box.right);`);
  const shot = await send('Page.captureScreenshot', {format: 'png', clip: {
    x: 0, y: 0, width: Math.min(WIDTH, right + 30), height: HEIGHT, scale: 1}});
  fs.writeFileSync(out, Buffer.from(shot.result.data, 'base64'));
  socket.close();
}

main().catch((err) => { console.error('error: ' + err.message); process.exit(1); });
JS
echo "wrote $OUT ($(($(stat -c %s "$OUT") / 1024)) KB)"
