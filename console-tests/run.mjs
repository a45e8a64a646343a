// The ops console in a real browser: headless Debian chromium (/usr/bin/chromium) driven by
// playwright-core, against a running stack reached through the edge. Started by
// stack/tests/console_browser.rs, which runs `komora up` and passes:
//   CONSOLE_BASE   the edge, e.g. http://127.0.0.1:8080
//   KOMORA_KEY     an admin API key
//   DEAD_TASK_ID   a dead task to retry
//   SCREENSHOTS    the folder for one PNG per page
// Steps: log in, pause the high queue, post a message (its send task waits in high) and see
// the live count change without a reload, resume and see it drain, retry the dead task and
// see the audit on its page, the workers page; the inbox preview with a thumbnail loaded
// through the edge, a purge of that media URL from the edge page (the next request is a
// MISS), creating a key (token shown once, works on the API), the doctor; logout. Exit
// code 0 only if all held.
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.CONSOLE_BASE;
const key = process.env.KOMORA_KEY;
const deadId = process.env.DEAD_TASK_ID;
const shots = process.env.SCREENSHOTS;
for (const [k, v] of Object.entries({ CONSOLE_BASE: base, KOMORA_KEY: key, DEAD_TASK_ID: deadId, SCREENSHOTS: shots })) {
  if (!v) {
    console.error(`console-tests: ${k} is not set`);
    process.exit(2);
  }
}
mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "komora-chromium-"));

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function shot(page, name) {
  const file = join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

async function api(path, init = {}) {
  const r = await fetch(base + path, {
    ...init,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...(init.headers || {}) },
  });
  if (!r.ok) throw new Error(`${init.method || "GET"} ${path}: HTTP ${r.status}`);
  return r.json();
}

// The number in the cell of `column` (1-based) of queue `queue`'s total row.
async function queueCell(page, queue, column) {
  const text = await page
    .locator("#live-queues tr.queue", { has: page.locator(`td:first-child a:text-is("${queue}")`) })
    .locator(`td:nth-child(${column})`)
    .innerText();
  return Number(text.trim());
}
const DUE = 2;

// A fresh profile (playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
let failed = false;
try {
  const page = await context.newPage();
  page.setDefaultTimeout(20000);

  // Any console page sends us to the login form.
  await page.goto(`${base}/console/queues`);
  check(page.url().includes("/console/login"), "an unauthenticated visit lands on the login page");
  await shot(page, "01-login");
  await page.getByLabel("API key").fill("wrong-key");
  await page.getByRole("button", { name: "Log in" }).click();
  check((await page.locator(".error").innerText()).includes("not a live API key"), "a bad key is refused");
  await page.getByLabel("API key").fill(key);
  await page.getByLabel("API key").press("Enter"); // keyboard submit
  await page.waitForURL(/\/console\/queues/);
  check((await page.locator("h1").innerText()) === "Queues", "logged in to the Queues page");

  // Pause high, then enqueue a send: the live table shows it waiting, without a reload.
  await page.getByRole("button", { name: "Pause high" }).click();
  await page.waitForURL(/done=pause/);
  check(await page.locator("tr.queue .paused").first().isVisible(), "high shows as paused");
  const before = await queueCell(page, "high", DUE);
  const inbox = await api("/api/inbox?limit=1");
  const conversation = inbox.conversations[0].id;
  await api(`/api/conversations/${conversation}/messages`, {
    method: "POST",
    body: JSON.stringify({ text: "Console test: your translation is ready." }),
  });
  const navigations = [];
  page.on("framenavigated", (f) => f === page.mainFrame() && navigations.push(f.url()));
  await page.waitForFunction(
    ([n]) => {
      const row = [...document.querySelectorAll("#live-queues tr.queue")].find(
        (r) => r.querySelector("td a")?.textContent.trim() === "high",
      );
      return row && Number(row.children[1].textContent.trim()) === n;
    },
    [before + 1],
    { timeout: 15000 },
  );
  check(navigations.length === 0, `live refresh shows high due ${before} -> ${before + 1} without a reload`);
  await shot(page, "02-queues-paused");

  // Resume: the worker drains it and the live count falls back.
  await page.getByRole("button", { name: "Resume high" }).click();
  await page.waitForURL(/done=resume/);
  await page.waitForFunction(
    () => {
      const row = [...document.querySelectorAll("#live-queues tr.queue")].find(
        (r) => r.querySelector("td a")?.textContent.trim() === "high",
      );
      return row && Number(row.children[1].textContent.trim()) === 0;
    },
    null,
    { timeout: 20000 },
  );
  check(true, "after resume the worker took the send (high due back to 0)");
  await shot(page, "03-queues");

  // Tasks: the dead one, filtered; then its own page; retry it.
  await page.getByRole("link", { name: "Tasks", exact: true }).click();
  await page.getByLabel("State").selectOption("dead");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/view=dead/);
  check(await page.locator(`a[href="/console/tasks/${deadId}"]`).isVisible(), "the dead task is listed");
  await shot(page, "04-tasks-dead");
  await page.locator(`a[href="/console/tasks/${deadId}"]`).click();
  await page.waitForURL(new RegExp(`/console/tasks/${deadId}$`));
  check((await page.locator(".state").first().innerText()) === "dead", "its page shows it dead");
  await page.getByRole("button", { name: "Retry" }).click();
  await page.waitForURL(/done=retry/);
  check((await page.locator(".notice").innerText()).includes("1 task queued again"), "retry answered");
  const timeline = await page.locator("table").last().innerText();
  check(/retry by komora-up/.test(timeline), "the retry and who did it are on the task's timeline");
  await shot(page, "05-task");

  // Workers: the stack's worker with a fresh heartbeat.
  await page.getByRole("link", { name: "Workers" }).click();
  await page.waitForURL(/\/console\/workers/);
  check(await page.locator("text=alive").first().isVisible(), "a worker is alive");
  await shot(page, "06-workers");

  // Inbox preview: an image sent in a conversation shows as a thumbnail loaded through
  // the edge, which then serves it from its cache.
  // A 64x48 PNG of four colour blocks.
  const png = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAAAwCAIAAAAuKetIAAAAT0lEQVR42u3QMQ0AIBRDwTpBGibZsYQEPPyk2yVvb65Z+1Z7J9UCAAAAAAAAAAAAAAAAAAAAADACtAfaBwEAAAAAAAAAAAAAAAAAAAAAjPrlckcA38DW8gAAAABJRU5ErkJggg==",
    "base64",
  );
  const upload = await fetch(`${base}/api/media?filename=scan.png`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "image/png" },
    body: png,
  });
  check(upload.ok, "an image uploaded through the edge");
  const media = await upload.json();
  await api(`/api/conversations/${conversation}/messages`, {
    method: "POST",
    body: JSON.stringify({ text: "Here is the scan of your certificate.", media_ids: [media.id] }),
  });
  await page.getByRole("link", { name: "Inbox preview" }).click();
  await page.waitForURL(/\/console\/inbox$/);
  check((await page.locator("#conversations tbody tr").count()) >= 1, "the inbox lists the seeded conversations");
  await shot(page, "07-inbox");
  await page.goto(`${base}/console/inbox/${conversation}`);
  const thumb = page.locator("img.thumb").first();
  await thumb.waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector("img.thumb");
    return img && img.complete && img.naturalWidth > 0;
  });
  const src = await thumb.evaluate((img) => img.src);
  check(src.startsWith(`${base}/media/${media.sha256}?exp=`), "the thumbnail is a signed media URL on the edge");
  await shot(page, "08-conversation");
  const cacheStatus = async () => (await fetch(src)).headers.get("x-cache-status");
  check((await cacheStatus()) === "HIT", "after the browser loaded it, the edge serves the thumbnail from its cache");

  // Edge caches: purge that media URL on every edge; the next request is a MISS.
  await page.getByRole("link", { name: "Edge caches" }).click();
  await page.waitForURL(/\/console\/edge$/);
  check((await page.locator(".hit-ratio").first().innerText()).includes("%"), "the edge's hit ratio is shown");
  await page.getByLabel("What").selectOption("url");
  await page.getByLabel("Path or URL").fill(src);
  await page.getByRole("button", { name: "Purge on every edge" }).click();
  await page.waitForURL(/\/console\/edge\/purge$/);
  check((await page.locator(".notice").innerText()).includes("Every edge accepted"), "the edge accepted the purge");
  check((await page.locator("#purge-answers").innerText()).includes('{"purged":1}'), "the edge purged one entry");
  check((await cacheStatus()) === "MISS", "the next request for the purged URL is a MISS");
  await shot(page, "09-edge-caches");

  // Keys: create an operator key; its token is shown once.
  await page.getByRole("link", { name: "Keys" }).click();
  await page.getByLabel("Name").fill("warsaw-desk");
  await page.getByLabel("Role").selectOption("operator");
  await page.locator("fieldset.offices input[type=checkbox]").first().check();
  await page.getByRole("button", { name: "Create key" }).click();
  const token = await page.locator("#new-token").inputValue();
  check(/^[0-9a-f]{64}$/.test(token), "the new key's token is shown");
  const asOperator = await fetch(`${base}/api/inbox?limit=1`, { headers: { authorization: `Bearer ${token}` } });
  check(asOperator.status === 200, "the new key works against the API");
  await shot(page, "10-keys");

  // Doctor: every check, with the offices' hours and the platform.
  await page.getByRole("link", { name: "Doctor" }).click();
  check((await page.locator("#checks tbody tr").count()) >= 5, "the doctor lists its checks");
  await shot(page, "11-doctor");

  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(/\/console\/login/);
  await page.goto(`${base}/console/queues`);
  check(page.url().includes("/console/login"), "after logout the console asks for a key again");
} catch (e) {
  failed = true;
  console.error(`console-tests: ${e.stack || e}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(failed ? "console-tests: FAILED" : "console-tests: all checks passed");
process.exit(failed ? 1 : 0);
