// Validates AsyncAPI documents with the official parser: node validate.mjs FILE...
// Prints every diagnostic; exits 1 if any is an error (severity 0), else 0.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(file, "utf8"));
  for (const d of diagnostics) {
    const where = d.path.join("/");
    console.log(`${file}: ${d.severity === 0 ? "error" : "note"} ${d.code} at /${where}: ${d.message}`);
  }
  if (document === undefined || diagnostics.some((d) => d.severity === 0)) failed = true;
  else console.log(`${file}: valid AsyncAPI ${document.version()}`);
}
process.exit(failed ? 1 : 0);
