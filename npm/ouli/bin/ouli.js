#!/usr/bin/env node
'use strict';
// `npx ouli ARGS`: runs this platform's binary with ARGS, passing signals on.
const { spawn } = require('node:child_process');
const { binaryPath } = require('..');

const child = spawn(binaryPath(), process.argv.slice(2), { stdio: 'inherit' });
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => {
  if (signal) process.kill(process.pid, signal);
  else process.exit(code);
});
