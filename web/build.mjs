// Bundles src/ into dist/ (index.html, assets/app.js, assets/pow-worker.js, assets/app.css),
// which the service embeds (src/server/ui.rs). The output is a function of the sources and the
// pinned versions only: no timestamps, no absolute paths, no source maps, so
// `git diff --exit-code dist` after a rebuild tells whether the committed bundle is up to date
// (scripts/web-checks.sh).

import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { build } from "esbuild";

const here = new URL(".", import.meta.url);
const out = new URL("dist/", here);

await rm(out, { recursive: true, force: true });
await mkdir(new URL("assets/", out), { recursive: true });

const common = {
  absWorkingDir: here.pathname,
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2022", "chrome109", "firefox115", "safari16"],
  platform: "browser",
  legalComments: "eof",
  charset: "utf8",
  write: false,
  outdir: "dist/assets",
  logLevel: "warning",
};
const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 16);

// The proof-of-work worker first: the page names it by its content hash (see ?v= below).
const worker = (await build({ ...common, entryPoints: { "pow-worker": "src/pow-worker.ts" } })).outputFiles[0].contents;
const workerUrl = `/assets/pow-worker.js?v=${hash(worker)}`;

const result = await build({
  ...common,
  entryPoints: { app: "src/main.ts", style: "src/style.css" },
  define: { POW_WORKER_URL: JSON.stringify(workerUrl) },
});

const files = { "pow-worker.js": worker };
for (const file of result.outputFiles) {
  const name = file.path.endsWith(".css") ? "app.css" : "app.js";
  files[name] = file.contents;
}
await writeFile(new URL("assets/app.js", out), files["app.js"]);
await writeFile(new URL("assets/pow-worker.js", out), files["pow-worker.js"]);
await writeFile(new URL("assets/app.css", out), files["app.css"]);
await writeFile(new URL("assets/icon.svg", out), await readFile(new URL("src/icon.svg", here)));
// The ?v= query names the content, so a browser never mixes a new page with old assets.
const html = (await readFile(new URL("index.html", here), "utf8"))
  .replace("%JS_HASH%", hash(files["app.js"]))
  .replace("%CSS_HASH%", hash(files["app.css"]));
await writeFile(new URL("index.html", out), html);
console.log(
  `dist/: index.html ${html.length} B, app.js ${files["app.js"].length} B, pow-worker.js ${files["pow-worker.js"].length} B, app.css ${files["app.css"].length} B`,
);
