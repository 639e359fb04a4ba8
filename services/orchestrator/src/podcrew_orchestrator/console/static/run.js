// The view of one run: its plan and sub-questions with their tool calls as they happen, the
// report as it is written, then the finished report with its sources, cancel and feedback.
import { call, follow } from "./api.js";
import { externalLink, renderMarkdown, safeUrl } from "./markdown.js";
import { $, clearError, el, runPath, showError, statusBadge } from "./ui.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const INPUT_SHOWN_CHARS = 80;

let view = null; // the run on view: {id, abort, report}

/** Shows run `id`: its events from the first on, live until it is final, then its result. */
export async function openRun(id) {
  view?.abort.abort();
  const mine = { id, abort: new AbortController(), report: "" };
  view = mine;
  history.replaceState(null, "", `?run=${encodeURIComponent(id)}`);
  resetView(id);
  try {
    const { body: run } = await call("GET", runPath(id));
    $("run-question").textContent = run.question;
    setStatus(run.status);
    await follow(id, (type, data) => onEvent(mine, type, data), mine.abort.signal);
    if (view !== mine) return;
    showFinal((await call("GET", runPath(id))).body);
    document.dispatchEvent(new CustomEvent("podcrew:run-final"));
  } catch (error) {
    if (view === mine) showError(error);
  }
}

function resetView(id) {
  clearError();
  $("run").hidden = false;
  delete $("run").dataset.final;
  $("run-id").textContent = id;
  $("run-question").textContent = "";
  $("run-note").textContent = "";
  $("plan").replaceChildren(el("li", "muted", "Waiting for the planner…"));
  $("report").replaceChildren();
  $("report").classList.remove("streaming");
  $("sources").replaceChildren();
  $("feedback-form").hidden = true;
  $("feedback-status").textContent = "";
}

function setStatus(status) {
  $("run-status").replaceWith(Object.assign(statusBadge(status), { id: "run-status" }));
  $("cancel").hidden = FINAL.has(status);
}

const HANDLERS = {
  "run.queued": () => setStatus("queued"),
  "run.requeued": () => { $("run-note").textContent = "Requeued after a worker stopped."; },
  "run.started": () => setStatus("running"),
  "cache.hit": () => { $("run-note").textContent = "Answered from the cache."; },
  "run.planned": (_, data) => showPlan(data.sub_questions),
  "research.started": (_, data) => step(data.index)?.classList.add("researching"),
  "tool.called": (_, data) => showToolCall(data),
  "research.finished": (_, data) => finishStep(data),
  "writer.started": (mine) => {
    mine.report = "";
    $("report").replaceChildren();
    $("report").classList.add("streaming");
  },
  "writer.delta": (mine, data) => {
    mine.report += data.text;
    $("report").replaceChildren(renderMarkdown(mine.report));
  },
  "run.succeeded": () => setStatus("succeeded"),
  "run.failed": () => setStatus("failed"),
  "run.cancelled": () => setStatus("cancelled"),
};

function onEvent(mine, type, data) {
  if (view === mine) HANDLERS[type]?.(mine, data);
}

function showPlan(subQuestions) {
  $("plan").replaceChildren(
    ...subQuestions.map((question) => el("li", "", el("span", "sub", question), el("ul", "tools")))
  );
}

const step = (index) => $("plan").children[index] ?? null;

function showToolCall({ index, name, input, ok, results, cached }) {
  const said = Object.values(input ?? {}).filter((v) => typeof v === "string").join(", ");
  const shown = said.length > INPUT_SHOWN_CHARS ? `${said.slice(0, INPUT_SHOWN_CHARS)}…` : said;
  const outcome = ok ? `${results} result${results === 1 ? "" : "s"}` : "failed";
  const text = `${name}(${shown}) → ${outcome}${cached ? " (cached)" : ""}`;
  step(index)?.querySelector(".tools").append(el("li", ok ? "" : "failed", text));
}

function finishStep({ index, ok, detail }) {
  const li = step(index);
  if (!li) return;
  li.classList.remove("researching");
  li.classList.add(ok ? "done" : "failed");
  if (!ok && detail) li.title = detail;
}

function showFinal(run) {
  setStatus(run.status);
  $("report").classList.remove("streaming");
  if ($("plan").querySelector(".tools") === null && run.sub_questions.length) {
    showPlan(run.sub_questions);
  }
  if (run.result) {
    $("report").replaceChildren(renderMarkdown(run.result.report));
    $("sources").replaceChildren(...run.result.sources.map(sourceItem));
    if (run.result.unresearched.length) {
      $("run-note").textContent = `Not researched: ${run.result.unresearched.join("; ")}`;
    }
  }
  if (run.error) $("run-note").textContent = `${run.error.type}: ${run.error.detail}`;
  $("feedback-form").hidden = run.status !== "succeeded";
  $("run").dataset.final = run.status; // the view is complete: every event shown, the result read
}

function sourceItem({ number, source }) {
  const url = source.url ? safeUrl(source.url) : null;
  const li = el("li", "", url ? externalLink(url, source.title) : source.title);
  li.id = `source-${number}`;
  li.value = number;
  if (!url) li.append(el("code", "", source.id));
  return li;
}

async function cancel() {
  try {
    const { body } = await call("DELETE", runPath(view.id));
    setStatus(body.status);
  } catch (error) {
    showError(error);
  }
}

async function giveFeedback(event) {
  const comment = $("feedback-comment").value.trim();
  const body = { score: Number(event.currentTarget.dataset.score) };
  if (comment) body.comment = comment;
  try {
    const { status } = await call("POST", `${runPath(view.id)}/feedback`, body);
    $("feedback-status").textContent =
      status === 201 ? "Thank you: feedback stored." : "This feedback was already given.";
  } catch (error) {
    showError(error);
  }
}

$("cancel").addEventListener("click", cancel);
$("feedback-up").addEventListener("click", giveFeedback);
$("feedback-down").addEventListener("click", giveFeedback);
