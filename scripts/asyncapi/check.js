// Validates an AsyncAPI document with the official parser (@asyncapi/parser, which
// applies the AsyncAPI JSON Schema and its Spectral rules). Prints one line per
// diagnostic as `<severity> <code> <path> <message>` (0 error, 1 warning, 2 info,
// 3 hint) and exits 1 when the document does not parse or has an error.
'use strict';
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');

async function main() {
  const text = fs.readFileSync(process.argv[2], 'utf8');
  const { document, diagnostics } = await new Parser().parse(text);
  for (const d of diagnostics) {
    console.log(`${d.severity} ${d.code} ${JSON.stringify(d.path)} ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (!document || errors.length > 0) {
    console.log(`invalid: ${errors.length} error(s)`);
    process.exit(1);
  }
  console.log('valid');
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
