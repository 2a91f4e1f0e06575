// Lints deploy/Dockerfile with two real linters, then checks the image policy deploy/README.md
// states. Run by scripts/test-deploy after `npm ci` here.
//
// - dockerfile-utils: the validator behind the Dockerfile language server used by VS Code's
//   and Eclipse's Docker support (maintained with it). It parses like the builder does:
//   unknown instructions and flags, bad arguments, invalid ports, signals, durations,
//   JSON-form mistakes, stage names. Every rule is raised to an error here.
// - dockerfilelint: best-practice rules (apt-get without -y or --no-install-recommends,
//   sudo, missing tags, ...). Older, but its rules still apply to Dockerfiles as written.
// hadolint, the usual choice, is not packaged for Debian 12 nor on npm without a download
// of its own binary, so it cannot run here.
//
// Each linter is also shown a Dockerfile with known faults, and must report them.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { DockerfileParser } from "dockerfile-ast";
import { validate, ValidationSeverity } from "dockerfile-utils";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const DOCKERFILE = path.join(REPO, "deploy", "Dockerfile");
const require = createRequire(import.meta.url);
const DOCKERFILELINT = require.resolve("dockerfilelint/bin/dockerfilelint");

const ALL_ERRORS = {
  deprecatedMaintainer: ValidationSeverity.ERROR,
  directiveCasing: ValidationSeverity.ERROR,
  emptyContinuationLine: ValidationSeverity.ERROR,
  instructionCasing: ValidationSeverity.ERROR,
  instructionCmdMultiple: ValidationSeverity.ERROR,
  instructionEntrypointMultiple: ValidationSeverity.ERROR,
  instructionHealthcheckMultiple: ValidationSeverity.ERROR,
  instructionJSONInSingleQuotes: ValidationSeverity.ERROR,
  instructionWorkdirRelative: ValidationSeverity.ERROR,
};

function utilsFindings(text) {
  return validate(text, ALL_ERRORS).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
}

function dockerfilelintFindings(text) {
  let out;
  try {
    // Reads .dockerfilelintrc from its working directory.
    out = execFileSync(process.execPath, [DOCKERFILELINT, "-o", "json"], { input: text, encoding: "utf8", cwd: HERE });
  } catch (e) {
    out = e.stdout; // exits non-zero when it finds issues
  }
  let files;
  try {
    files = JSON.parse(out).files || [];
  } catch {
    return [`dockerfilelint gave no report: ${String(out).slice(0, 200)}`];
  }
  return files.flatMap((f) => f.issues.map((i) => `line ${i.line}: ${i.title} (${i.category})`));
}

// The policy: a scratch runtime stage as the last one, a numeric non-root USER, exec-form
// ENTRYPOINT, STOPSIGNAL SIGTERM, no HEALTHCHECK, base images only through BASE_IMAGE
// (whose default names no registry host) or earlier stages.
function policyFindings(text) {
  const f = [];
  const df = DockerfileParser.parse(text);
  const froms = df.getFROMs();
  const stages = new Set();
  for (const from of froms) {
    const image = from.getImage();
    if (!(image === "${BASE_IMAGE}" || image === "scratch" || stages.has(image)))
      f.push(`FROM ${image}: base images come only from BASE_IMAGE or an earlier stage`);
    if (from.getBuildStage()) stages.add(from.getBuildStage());
  }
  const argDefault = df.getInitialARGs().map((i) => i.getArgumentsContent())
    .find((a) => a.startsWith("BASE_IMAGE="));
  const base = argDefault ? argDefault.slice("BASE_IMAGE=".length) : "";
  if (!argDefault) f.push("no ARG BASE_IMAGE=<default> before the first FROM");
  else if (/^[^/]*[.:][^/]*\//.test(base)) f.push(`BASE_IMAGE default names a registry host: ${base}`);
  else if (!/:[\w.-]+$|@sha256:[0-9a-f]{64}$/.test(base) || /:latest$/.test(base))
    f.push(`BASE_IMAGE default has no pinned tag: ${base}`);
  const last = froms[froms.length - 1];
  if (!last || last.getImage() !== "scratch") f.push("the runtime (last) stage is not FROM scratch");
  const startLine = last ? last.getRange().start.line : 0;
  const runtime = df.getInstructions().filter((i) => i.getRange().start.line > startLine);
  const kw = (k) => runtime.filter((i) => i.getKeyword() === k);
  if (kw("RUN").length) f.push("the runtime stage runs commands (it has no shell)");
  const user = kw("USER").map((i) => i.getArgumentsContent()).pop();
  if (!user || !/^[1-9]\d*:[1-9]\d*$/.test(user)) f.push(`runtime USER is not a numeric non-root uid:gid: ${user}`);
  const ep = kw("ENTRYPOINT").pop();
  if (!ep || !ep.getArgumentsContent().trim().startsWith("[")) f.push("ENTRYPOINT is not in exec (JSON) form");
  if ((kw("STOPSIGNAL").pop()?.getArgumentsContent() || "") !== "SIGTERM") f.push("no STOPSIGNAL SIGTERM");
  if (df.getInstructions().some((i) => i.getKeyword() === "HEALTHCHECK")) f.push("HEALTHCHECK present (Kubernetes probes do that)");
  for (const r of df.getInstructions().filter((i) => i.getKeyword() === "RUN")) {
    const a = r.getArgumentsContent();
    if (/apt-get\s+install/.test(a) && !/--no-install-recommends/.test(a)) f.push(`line ${r.getRange().start.line + 1}: apt-get install without --no-install-recommends`);
  }
  const ignore = fs.readFileSync(path.join(REPO, ".dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  if (ignore[0] !== "*") f.push(".dockerignore is not an allow-list (first pattern must be *)");
  return f;
}

let passed = 0;
let failed = 0;
function report(name, errors) {
  if (errors.length === 0) {
    passed++;
    console.log(`ok    ${name}`);
  } else {
    failed++;
    console.log(`FAIL  ${name}`);
    for (const e of errors) console.log(`        ${e}`);
  }
}

const text = fs.readFileSync(DOCKERFILE, "utf8");
report("deploy/Dockerfile: dockerfile-utils finds nothing", utilsFindings(text));
report("deploy/Dockerfile: dockerfilelint finds nothing", dockerfilelintFindings(text));
report("deploy/Dockerfile: image policy", policyFindings(text));

const faulty = [
  "FROM debian:12 AS build",
  "MAINTAINER someone",
  "RUN apt-get install curl",
  "COPY --frm=build /a /b",
  "EXPOSE 99999",
  "HEALTHCHECK --interval=5s CMD true",
  "FROM build",
  "USER root",
  "ENTRYPOINT /bin/app",
].join("\n") + "\n";
report("self-test: dockerfile-utils reports a faulty Dockerfile", utilsFindings(faulty).length >= 2 ? [] : ["no findings"]);
report("self-test: dockerfilelint reports a faulty Dockerfile", dockerfilelintFindings(faulty).length >= 2 ? [] : ["no findings"]);
report("self-test: the image policy rejects a faulty Dockerfile", policyFindings(faulty).length >= 5 ? [] : ["too few findings"]);

console.log(`dockerfile: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
