// The console's page: key, question, the live view of a run, recent runs, cancel, feedback.
// Every call goes to the public run API of the origin that served the page.
import { apiKey, call } from "./api.js";
import { openRun } from "./run.js";
import { $, clearError, el, runPath, showError, statusBadge } from "./ui.js";

// There is no endpoint that lists a tenant's runs: the console remembers the ids of the runs
// asked from this browser (ids only; what they asked is read with the key, per run).
const RECENT = "podcrew.console.runs";
const RECENT_MAX = 20;

// --- the key ---------------------------------------------------------------------------

function showKeyState(text) {
  $("key-status").textContent = text;
  $("forget-key").hidden = !apiKey.get();
}

async function useKey(event) {
  event.preventDefault();
  apiKey.set($("api-key").value.trim());
  $("api-key").value = "";
  try {
    // An estimate costs nothing and needs a tenant: the cheapest question a key can answer.
    await call("POST", "/v1/estimate", { question: "Is this key accepted?" });
    showKeyState("Key accepted (kept in this tab only).");
    clearError();
    await refreshRecent();
  } catch (error) {
    showKeyState("Key refused.");
    showError(error);
  }
}

function forgetKey() {
  apiKey.clear();
  showKeyState("No key set.");
}

// --- recent runs ---------------------------------------------------------------------------

function recentIds() {
  try {
    const ids = JSON.parse(localStorage.getItem(RECENT) || "[]");
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
  } catch {
    return [];
  }
}

function remember(id) {
  const ids = [id, ...recentIds().filter((known) => known !== id)].slice(0, RECENT_MAX);
  localStorage.setItem(RECENT, JSON.stringify(ids));
}

async function readable(id) {
  try {
    return (await call("GET", runPath(id))).body;
  } catch (error) {
    if (error.status === 404) return null; // expired, or another tenant's
    throw error;
  }
}

async function refreshRecent() {
  try {
    const runs = (await Promise.all(recentIds().map(readable))).filter(Boolean);
    $("recent-runs").replaceChildren(...runs.map(recentItem));
    if (runs.length === 0) $("recent-runs").append(el("li", "muted", "No runs yet."));
  } catch (error) {
    showError(error);
  }
}

function recentItem(run) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.run = run.id;
  button.append(statusBadge(run.status), run.question);
  button.addEventListener("click", () => openRun(run.id));
  return el("li", "", button);
}

// --- asking ------------------------------------------------------------------------------

async function ask(event) {
  event.preventDefault();
  clearError();
  $("ask").disabled = true; // one click, one run
  try {
    const { body } = await call("POST", "/v1/runs", { question: $("question").value.trim() });
    remember(body.id);
    $("question").value = "";
    openRun(body.id);
    refreshRecent();
  } catch (error) {
    showError(error);
  } finally {
    $("ask").disabled = false;
  }
}

// --- start ------------------------------------------------------------------------------

$("key-form").addEventListener("submit", useKey);
$("forget-key").addEventListener("click", forgetKey);
$("ask-form").addEventListener("submit", ask);
$("refresh-runs").addEventListener("click", refreshRecent);
document.addEventListener("podcrew:run-final", refreshRecent);
showKeyState(apiKey.get() ? "Key set (kept in this tab only)." : "No key set.");
// The run on view is in the page's address (never the key), so a reload resumes it.
const onView = new URLSearchParams(location.search).get("run");
if (onView) openRun(onView);
refreshRecent();
