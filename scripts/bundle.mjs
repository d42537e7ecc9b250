// Bundles src/cli.ts and every runtime dependency into dist/bundle/ (issue 16): loading ~250
// CommonJS files and the ESM files of dist/ one by one was most of the start. The dynamic
// import()s (zod, execa, the OpenTelemetry SDK, cbor2, the CLI subcommands) stay lazy, as
// chunks of their own. dist/cli.js becomes a one-line entry that imports dist/bundle/cli.js.
// tsc still type-checks and still emits dist/'s module files, which the tests import; the
// daemon and the CLI never load them, and need no node_modules.
//
// Two kinds of paths point outside the code, and keep meaning what they meant unbundled:
// - our own `import.meta.url` (the protos, dist/build-info.json): each becomes the URL the file
//   has in tsc's dist/ (every chunk sits in dist/bundle/, one level below);
// - a dependency's `__dirname` (grpc-health-check's health.proto, @grpc/reflection's protos,
//   grpc-js's channelz/ORCA protos): it becomes dist/bundle/vendor/<package>/<its directory>,
//   and the build copies that package's .proto files there from node_modules, same layout.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const DIST = path.join(ROOT, 'dist');
const OUT = path.join(DIST, 'bundle');
const VENDOR = path.join(OUT, 'vendor');
const posix = (p) => p.split(path.sep).join('/');

/**
 * The package a file of node_modules belongs to: its directory, its path under node_modules/
 * ("@scope/name", or "a/node_modules/b" for a nested copy) and the file's path inside it.
 */
const NODE_MODULES = fs.realpathSync(path.join(ROOT, 'node_modules'));

function packageOf(file) {
  const rel = posix(path.relative(ROOT, file));
  const m = /^(?:.*\/)?node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(rel);
  if (!m) return undefined;
  const dir = file.slice(0, file.length - m[2].length - 1);
  // esbuild reports real paths: relative to node_modules' real path (a symlinked one, as in a git worktree, too).
  return { name: posix(path.relative(NODE_MODULES, dir)), dir, inner: m[2] };
}

const vendored = new Map(); // package path under node_modules/ -> its directory

const paths = {
  name: 'cocos-paths',
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, 'utf8');
      if (!text.includes('import.meta.url') || !args.path.startsWith(path.join(ROOT, 'src') + path.sep)) return undefined;
      const asBuilt = posix(path.relative(path.join(ROOT, 'src'), args.path)).replace(/\.ts$/, '.js');
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(`../${asBuilt}`)}, import.meta.url).href`), loader: 'ts' };
    });
    build.onLoad({ filter: /[\\/]node_modules[\\/].*\.c?js$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, 'utf8');
      if (!/\b__(dirname|filename)\b/.test(text)) return undefined;
      const pkg = packageOf(args.path);
      if (pkg === undefined) return undefined;
      vendored.set(pkg.name, pkg.dir);
      const dir = posix(path.join(pkg.name, path.dirname(pkg.inner)));
      const file = posix(path.join(pkg.name, pkg.inner));
      return {
        contents: text
          .replace(/\b__dirname\b/g, `(__bundleDir + ${JSON.stringify(`/vendor/${dir}`)})`)
          .replace(/\b__filename\b/g, `(__bundleDir + ${JSON.stringify(`/vendor/${file}`)})`),
        loader: 'js',
      };
    });
  },
};

/** Node's rule: .cjs, or .js under a package.json without "type": "module". */
function isCommonJs(file) {
  if (file.endsWith('.cjs')) return true;
  if (!file.endsWith('.js')) return false;
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) return JSON.parse(fs.readFileSync(pj, 'utf8')).type !== 'module';
    if (path.dirname(dir) === dir) return true;
  }
}

// With code splitting, esbuild gives a dynamic import() of a CommonJS module only a `default`
// export (evanw/esbuild#3245), where Node gives its named exports too (the lazily loaded
// OpenTelemetry SDK is CommonJS). Such an import goes through a small ESM module that
// re-exports those names, read from Node's own view of the module (an import() here).
const dynamicCommonJs = {
  name: 'cocos-dynamic-commonjs',
  setup(build) {
    build.onResolve({ filter: /.*/ }, async (args) => {
      if (args.kind !== 'dynamic-import' || args.pluginData?.cocos) return undefined;
      const r = await build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: { cocos: true } });
      if (r.errors.length > 0 || r.external || !isCommonJs(r.path)) return undefined;
      return { path: r.path, namespace: 'cocos-commonjs' };
    });
    build.onLoad({ filter: /.*/, namespace: 'cocos-commonjs' }, async (args) => {
      const names = Object.keys(await import(pathToFileURL(args.path).href)).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n));
      return { contents: `export { ${names.join(', ')} } from ${JSON.stringify(args.path)};\n`, resolveDir: path.dirname(args.path), loader: 'js' };
    });
  },
};

/** Every .proto file under dir, relative to it. */
function protosUnder(dir, rel = '') {
  const out = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory() && e.name !== 'node_modules') out.push(...protosUnder(dir, r));
    else if (e.isFile() && e.name.endsWith('.proto')) out.push(r);
  }
  return out;
}

// Chunks of an earlier build would otherwise pile up next to the new ones.
fs.rmSync(OUT, { recursive: true, force: true });

await esbuild.build({
  entryPoints: { cli: path.join(ROOT, 'src/cli.ts') },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  splitting: true,
  outdir: OUT,
  chunkNames: '[name]-[hash]',
  sourcemap: 'linked',
  logLevel: 'warning',
  // CommonJS dependencies require Node's built-ins: ESM output has no `require` of its own.
  // __bundleDir: the directory of every output file (all of them sit in dist/bundle/).
  banner: {
    js: [
      "import { createRequire as __cocosCreateRequire } from 'node:module';",
      "import { fileURLToPath as __cocosFileURLToPath } from 'node:url';",
      'const require = __cocosCreateRequire(import.meta.url);',
      "const __bundleDir = __cocosFileURLToPath(new URL('.', import.meta.url)).replace(/\\/$/, '');",
    ].join('\n'),
  },
  plugins: [paths, dynamicCommonJs],
});

for (const [name, dir] of vendored) {
  for (const rel of protosUnder(dir)) {
    const to = path.join(VENDOR, name, rel);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(path.join(dir, rel), to);
  }
}
// What `node dist/cli.js` and the systemd unit run.
fs.writeFileSync(path.join(DIST, 'cli.js'), "#!/usr/bin/env node\n// The bundle (scripts/bundle.mjs); src/cli.ts is its source.\nimport './bundle/cli.js';\n", { mode: 0o755 });
fs.chmodSync(path.join(DIST, 'cli.js'), 0o755);
fs.rmSync(path.join(DIST, 'cli.js.map'), { force: true });
