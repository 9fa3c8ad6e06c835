'use strict';
// ouli for Node: the binary of this platform (from the optional dependency
// `ouli-<platform>-<arch>[-<libc>]`, installed by npm with no download
// script) and `startOuli()`, which runs it, waits for its ready lines
// (`ouli listening endpoint=<i> addr=<ip:port> mode=<mode>[ tls=on[ ca=<file>]]`)
// and stops it with SIGTERM.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');

/** Milliseconds startOuli waits for the ready line of endpoint 0. */
const READY_TIMEOUT_MS = 30000;
/** Milliseconds stop() waits after SIGTERM before it kills ouli. */
const STOP_TIMEOUT_MS = 30000;
/** Milliseconds one control request (`/__ouli/...`) may take. */
const CONTROL_TIMEOUT_MS = 10000;
/** Bytes of stdout kept before the ready lines at most. */
const READY_OUTPUT_BYTES_MAX = 64 * 1024;
/** Bytes of ouli's log (stderr) kept for error messages (the last ones). */
const LOG_TAIL_BYTES_MAX = 4096;
/** Bytes of a control answer read at most. */
const CONTROL_ANSWER_BYTES_MAX = 16 * 1024 * 1024;

const MODES = ['replay', 'record', 'record-missing', 'passthrough'];
const READY = /^ouli listening endpoint=(\d+) addr=(\S+) mode=(\S+)( tls=on)?(?: ca=(.+))?$/;

/** The name of the package that carries this platform's binary. */
function platformPackage() {
  let libc = '';
  if (process.platform === 'linux') {
    const report = process.report && process.report.getReport();
    libc = report && report.header && report.header.glibcVersionRuntime ? '-gnu' : '-musl';
  }
  return `ouli-${process.platform}-${process.arch}${libc}`;
}

/** The ouli binary: OULI_BIN when set, else the platform package's. */
function binaryPath() {
  if (process.env.OULI_BIN) return process.env.OULI_BIN;
  const name = platformPackage();
  const exe = process.platform === 'win32' ? 'ouli.exe' : 'ouli';
  try {
    return require.resolve(`${name}/bin/${exe}`);
  } catch {
    throw new Error(
      `ouli: the package ${name} (this platform's binary) is not installed; ` +
        'it is an optional dependency of ouli: install without --omit=optional / --no-optional, ' +
        'or set OULI_BIN to an ouli binary',
    );
  }
}

/** The endpoint a ready line announces, or null. */
function parseReadyLine(line) {
  const m = READY.exec(line.replace(/\r?\n$/, ''));
  if (!m) return null;
  const tls = m[4] !== undefined;
  return {
    index: Number(m[1]),
    addr: m[2],
    mode: m[3],
    tls,
    caFile: m[5] || null,
    url: `${tls ? 'https' : 'http'}://${m[2]}`,
  };
}

/**
 * Starts `ouli <mode>` and resolves once every endpoint listens.
 * @param {{mode?: string, config?: string, recordingDir?: string, args?: string[], env?: object, binary?: string}} options
 */
function startOuli(options = {}) {
  const mode = options.mode || 'replay';
  if (!MODES.includes(mode)) {
    return Promise.reject(new Error(`ouli: mode ${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`));
  }
  const args = [mode];
  if (options.config) args.push('--config', path.resolve(options.config));
  if (options.recordingDir) args.push('--recording-dir', path.resolve(options.recordingDir));
  args.push(...(options.args || []));
  let binary;
  try {
    binary = options.binary || binaryPath();
  } catch (error) {
    return Promise.reject(error);
  }
  const child = spawn(binary, args, {
    env: { ...process.env, ...(options.env || {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    log = (log + text).slice(-LOG_TAIL_BYTES_MAX);
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const endpoints = new Map();
    let buffered = '';
    let settled = false;
    let waiting = false;
    const fail = (message) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(new Error(`ouli: ${message}${log ? `; its log ends:\n${log.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`no ready line within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
    child.once('error', (error) => fail(`cannot run ${binary}: ${error.message}`));
    exited.then(({ code, signal }) => fail(`exited (code ${code}, signal ${signal}) before it was ready`));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text) => {
      if (settled) return;
      buffered += text;
      if (buffered.length > READY_OUTPUT_BYTES_MAX) return fail(`printed over ${READY_OUTPUT_BYTES_MAX} bytes without a ready line`);
      const lines = buffered.split('\n');
      buffered = lines.pop();
      for (const line of lines) {
        const endpoint = parseReadyLine(line);
        if (endpoint) endpoints.set(endpoint.index, endpoint);
      }
      if (endpoints.has(0) && !waiting) {
        waiting = true;
        allEndpoints().then(ready, (error) => fail(error.message));
      }
    });
    // ouli prints every ready line before it accepts a connection: once
    // endpoint 0 answers, the other lines are in the pipe, read by the end
    // of this turn of the event loop.
    const allEndpoints = async () => {
      const first = endpoints.get(0);
      await control(first, controlAgent(first.caFile), 'GET', 'health');
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
    };
    const ready = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout.resume();
      resolve(handle(child, [...endpoints.values()].sort((a, b) => a.index - b.index), mode, exited, () => log));
    };
  });
}

/** The https agent of the control requests: trusting the generated CA. */
function controlAgent(caFile) {
  if (!caFile) return new https.Agent({ rejectUnauthorized: false });
  return new https.Agent({ ca: fs.readFileSync(caFile) });
}

/** `method /__ouli/<path>` on `endpoint`: resolves `{status, body}` (JSON). */
function control(endpoint, agent, method, controlPath, body) {
  const url = new URL(`/__ouli/${controlPath}`, endpoint.url);
  const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
  const client = endpoint.tls ? https : http;
  return new Promise((resolve, reject) => {
    const request = client.request(
      url,
      {
        method,
        agent: endpoint.tls ? agent : undefined,
        timeout: CONTROL_TIMEOUT_MS,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
      },
      (answer) => {
        const chunks = [];
        let size = 0;
        answer.on('data', (chunk) => {
          size += chunk.length;
          if (size > CONTROL_ANSWER_BYTES_MAX) {
            request.destroy(new Error(`the answer is over ${CONTROL_ANSWER_BYTES_MAX} bytes`));
          } else chunks.push(chunk);
        });
        answer.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {}
          resolve({ status: answer.statusCode, body: parsed });
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error(`no answer within ${CONTROL_TIMEOUT_MS} ms`)));
    request.on('error', (error) => reject(new Error(`ouli: ${method} ${url.pathname}: ${error.message}`)));
    request.end(data || undefined);
  });
}

function handle(child, endpoints, mode, exited, log) {
  const first = endpoints[0];
  const caFile = endpoints.map((e) => e.caFile).find(Boolean) || null;
  const agent = controlAgent(caFile);
  const ask = async (method, controlPath, body) => {
    const { status, body: answer } = await control(first, agent, method, controlPath, body);
    if (status >= 400) throw new Error(`ouli: ${method} /__ouli/${controlPath} answered ${status}: ${JSON.stringify(answer)}`);
    return answer;
  };
  let stopping = null;
  return {
    url: first.url,
    urls: endpoints.map((e) => e.url),
    caFile,
    mode,
    endpoints,
    process: child,
    /** What ouli logged last (stderr). */
    log,
    /** `method /__ouli/<path>`: the JSON answer (throws on an error answer). */
    control: ask,
    /** The last misses, oldest first; of `session` only when given. */
    async misses(session) {
      const { misses = [] } = await ask('GET', 'misses');
      return session === undefined ? misses : misses.filter((m) => m.session === session);
    },
    /** The session of requests that name none (null: the default one). */
    setSession(name) {
      return name == null ? ask('DELETE', 'session') : ask('PUT', 'session', { name });
    },
    /** Every session known, with its served and unused counts. */
    async sessions() {
      return (await ask('GET', 'sessions')).sessions;
    },
    /** SIGTERM; resolves the exit code once the recordings are closed. */
    stop() {
      if (!stopping) {
        stopping = (async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          let timer;
          const late = new Promise((resolve) => {
            timer = setTimeout(resolve, STOP_TIMEOUT_MS, 'late');
          });
          const outcome = await Promise.race([exited, late]);
          clearTimeout(timer);
          agent.destroy();
          if (outcome === 'late') {
            child.kill('SIGKILL');
            await exited;
            throw new Error(`ouli: did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM; killed`);
          }
          return outcome.code;
        })();
      }
      return stopping;
    },
  };
}

module.exports = { startOuli, binaryPath, platformPackage, parseReadyLine, MODES };
