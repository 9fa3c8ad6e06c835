'use strict';
// The npm package end to end, run by scripts/test-npm in a fresh project
// that installed the packed tarballs: a real upstream (node:http), ouli
// recording it, then replaying with the upstream gone, and a miss.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startOuli, binaryPath, parseReadyLine } = require('ouli');

/** A JSON API that names and counts each request. */
function startUpstream() {
  const hits = [];
  const server = http.createServer((request, response) => {
    hits.push(`${request.method} ${request.url}`);
    const body = JSON.stringify({ path: request.url, n: hits.length });
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    response.end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, hits, port: server.address().port })));
}

function project(upstreamPort) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ouli-npm-'));
  const config = path.join(dir, 'ouli.yaml');
  fs.writeFileSync(
    config,
    `endpoints:\n  - {target_host: 127.0.0.1, target_port: ${upstreamPort}, target_type: http, source_type: http, source_port: 0}\n`,
  );
  return { dir, config, recordingDir: path.join(dir, 'rec') };
}

async function getJson(url, headers = {}) {
  const answer = await fetch(url, { headers });
  return { status: answer.status, error: answer.headers.get('x-ouli-error'), body: await answer.json() };
}

test('the binary comes from the platform package, installed from its tarball', () => {
  const binary = binaryPath();
  assert.match(binary, /node_modules[/\\]ouli-linux-x64-gnu[/\\]bin[/\\]ouli$/);
  fs.accessSync(binary, fs.constants.X_OK);
});

test('ready lines', () => {
  assert.deepStrictEqual(parseReadyLine('ouli listening endpoint=1 addr=127.0.0.1:4100 mode=replay tls=on ca=/tmp/a b.pem'), {
    index: 1,
    addr: '127.0.0.1:4100',
    mode: 'replay',
    tls: true,
    caFile: '/tmp/a b.pem',
    url: 'https://127.0.0.1:4100',
  });
  assert.strictEqual(parseReadyLine('INFO something else'), null);
});

test('record against a live upstream, replay offline, and a miss', async () => {
  const upstream = await startUpstream();
  const { config, recordingDir } = project(upstream.port);
  const headers = { 'test-name': 'node/items' };

  const recorder = await startOuli({ mode: 'record', config, recordingDir });
  assert.match(recorder.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.strictEqual(recorder.caFile, null);
  const recorded = await getJson(`${recorder.url}/v1/items?q=1`, headers);
  assert.deepStrictEqual(recorded.body, { path: '/v1/items?q=1', n: 1 });
  assert.strictEqual(await recorder.stop(), 0);
  assert.ok(fs.statSync(path.join(recordingDir, 'node/items.ouli')).size > 0);
  await new Promise((resolve) => upstream.server.close(resolve));

  const replayer = await startOuli({ mode: 'replay', config, recordingDir });
  try {
    const replayed = await getJson(`${replayer.url}/v1/items?q=1`, headers);
    assert.deepStrictEqual(replayed, { status: 200, error: null, body: { path: '/v1/items?q=1', n: 1 } });
    assert.deepStrictEqual(await replayer.misses(), []);

    const missed = await getJson(`${replayer.url}/v1/items?q=2`, headers);
    assert.strictEqual(missed.status, 404);
    assert.strictEqual(missed.error, 'replay-miss');
    const misses = await replayer.misses('node/items');
    assert.strictEqual(misses.length, 1);
    assert.strictEqual(misses[0].target, '/v1/items?q=2');
    assert.deepStrictEqual(misses[0].differences, [{ field: 'query q', expected: '1', got: '2' }]);
  } finally {
    assert.strictEqual(await replayer.stop(), 0);
  }
  assert.deepStrictEqual(upstream.hits, ['GET /v1/items?q=1']);
});

test('the active session names the requests that name none', async () => {
  const upstream = await startUpstream();
  const { config, recordingDir } = project(upstream.port);
  const recorder = await startOuli({ mode: 'record', config, recordingDir });
  try {
    assert.deepStrictEqual((await recorder.setSession('node/active')).name, 'node/active');
    await getJson(`${recorder.url}/v1/a`);
    await recorder.setSession(null);
  } finally {
    assert.strictEqual(await recorder.stop(), 0);
    upstream.server.close();
  }
  assert.ok(fs.existsSync(path.join(recordingDir, 'node/active.ouli')));
});

test('a start failure names the cause', async () => {
  await assert.rejects(startOuli({ mode: 'replay', recordingDir: path.join(os.tmpdir(), 'ouli-no-such-dir-x') }), /exited \(code 2.*before it was ready/s);
  await assert.rejects(startOuli({ mode: 'bogus' }), /not one of replay/);
});
