// The radiologists' worklist page (viewer_api/worklist_page.py renders its frame and words).
// Plain JavaScript modules, no build step: the list refreshes itself every 10 s and marks
// new rows and new AI flags; a row opens the study in the side panel (panel.js).

import {
  ME,
  api,
  clock,
  dicomDate,
  el,
  fill,
  lockIcon,
  modalities,
  percent,
  personName,
  score,
  severityBadge,
  statusBadge,
  t,
  waiting,
} from "./common.js";
import { openStudy, openedUid } from "./panel.js";

const REFRESH_MS = 10_000;
const body = document.querySelector("#worklist tbody");
const filters = document.getElementById("filters");
const listMessage = document.getElementById("list-message");
const updated = document.getElementById("updated");

const list = { previous: null, flagged: new Set(), hospitals: new Set(), rows: new Map() };

function query() {
  const form = new FormData(filters);
  const params = new URLSearchParams();
  for (const [name, raw] of form.entries()) {
    let value = String(raw).trim();
    if (!value) continue;
    if (name === "date_from" || name === "date_to") value = value.replaceAll("-", "");
    if (name === "claimed_by" && value === "mine") value = ME;
    params.set(name, value);
  }
  return params;
}

function learnHospitals(rows) {
  const select = filters.elements.namedItem("hospital");
  for (const row of rows) {
    if (row.hospital && !list.hospitals.has(row.hospital)) {
      list.hospitals.add(row.hospital);
      select.append(el("option", { value: row.hospital, text: row.hospital }));
    }
  }
}

function holderCell(row) {
  if (!row.claimed_by) return el("td", { class: "holder" });
  if (row.claimed_by === ME) {
    return el("td", { class: "holder mine" }, `${row.claimed_by} (${t("you")})`);
  }
  return el(
    "td",
    { class: "holder locked", title: t("locked_by", { name: row.claimed_by }) },
    lockIcon(),
    el("span", { text: row.claimed_by }),
  );
}

function aiCell(row) {
  if (!row.ai_severity) return el("td", { class: "ai" });
  return el(
    "td",
    { class: "ai", title: row.ai_model || "" },
    severityBadge(row.ai_severity),
    el("span", { class: "finding", text: row.ai_finding || "" }),
    el("span", { class: "score", text: score(row.ai_score) }),
  );
}

function rowOf(row, fresh, newFlag) {
  const classes = [];
  if (row.ai_severity) classes.push(`flag-${row.ai_severity}`);
  if (fresh) classes.push("fresh");
  if (newFlag) classes.push("new-flag");
  if (openedUid() === row.study_instance_uid) classes.push("selected");
  const tr = el(
    "tr",
    {
      class: classes.join(" "),
      tabindex: "0",
      "data-uid": row.study_instance_uid,
      title: newFlag ? t("new_flag") : null,
      onclick: () => openStudy(row),
      onkeydown: (event) => {
        if (event.key === "Enter") openStudy(row);
      },
    },
    el(
      "td",
      { class: "patient" },
      el("strong", { text: personName(row.patient_name) }),
      el("small", { text: row.patient_id || "" }),
    ),
    el(
      "td",
      { class: "study" },
      el("span", { text: dicomDate(row.study_date) }),
      el("small", { text: row.study_description || "" }),
    ),
    el("td", { class: "hospital", text: row.hospital || "" }),
    el("td", { class: "modality", text: modalities(row.modalities_in_study) }),
    aiCell(row),
    el("td", { class: "waiting", text: row.received_at ? waiting(row.received_at) : "" }),
    el("td", { class: "state" }, statusBadge(row.status)),
    holderCell(row),
  );
  return tr;
}

function showRows(rows) {
  const first = list.previous === null;
  const seen = new Set();
  const flagged = new Set();
  const trs = rows.map((row) => {
    const uid = row.study_instance_uid;
    seen.add(uid);
    if (row.ai_severity) flagged.add(uid);
    list.rows.set(uid, row);
    const fresh = !first && !list.previous.has(uid);
    const newFlag = !first && Boolean(row.ai_severity) && !list.flagged.has(uid);
    return rowOf(row, fresh, newFlag);
  });
  fill(body, ...trs);
  list.previous = seen;
  list.flagged = flagged;
  listMessage.textContent = rows.length ? "" : t("empty");
  listMessage.classList.remove("error");
}

let refreshing = null;
let again = false;

/** Load the list with the filters as they are; asked again while loading (the filters
 * changed meanwhile), it loads once more when the first answer is in. */
async function refresh() {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      again = false;
      try {
        const rows = await api("GET", `/api/worklist?${query()}`);
        if (again) continue; // an answer to filters no longer shown
        learnHospitals(rows);
        showRows(rows);
        updated.textContent = t("updated", { time: clock(null, true) });
      } catch (failure) {
        listMessage.textContent = t("refresh_failed", { reason: failure.message });
        listMessage.classList.add("error");
      }
    } while (again);
    refreshing = null;
  })();
  return refreshing;
}

filters.addEventListener("change", () => {
  list.previous = null; // another selection: nothing in it is "new"
  refresh();
});
filters.addEventListener("submit", (event) => event.preventDefault());
filters.addEventListener("reset", () =>
  setTimeout(() => {
    list.previous = null;
    refresh();
  }, 0),
);

function markSelected() {
  const uid = openedUid();
  document.body.classList.toggle("reading", uid !== null);
  for (const tr of body.querySelectorAll("tr")) {
    tr.classList.toggle("selected", tr.dataset.uid === uid);
  }
}

document.addEventListener("panelchange", () => {
  markSelected();
  refresh();
});

// -- AI performance --------------------------------------------------------------------

const performanceSection = document.getElementById("performance");
document.getElementById("show-performance").addEventListener("click", async () => {
  performanceSection.hidden = !performanceSection.hidden;
  if (performanceSection.hidden) return;
  const target = document.getElementById("performance-body");
  try {
    const models = await api("GET", "/api/ai/performance");
    if (!models.length) {
      fill(target, el("p", { text: t("perf_none") }));
      return;
    }
    const columns = [
      ["perf_model", (m) => m.model],
      ["perf_studies", (m) => m.studies],
      ["perf_flags", (m) => m.flags],
      ["perf_reviewed", (m) => m.reviewed],
      ["perf_agreement", (m) => percent(m.agreement_rate)],
      ["perf_ppv", (m) => percent(m.positive_predictive_value)],
      ["perf_flagged_minutes", (m) => m.minutes_to_final_flagged ?? "—"],
      ["perf_unflagged_minutes", (m) => m.minutes_to_final_unflagged ?? "—"],
    ];
    fill(
      target,
      el(
        "table",
        { class: "performance-table" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            columns.map(([key]) => el("th", { text: t(key) })),
          ),
        ),
        el(
          "tbody",
          {},
          models.map((m) =>
            el(
              "tr",
              {},
              columns.map(([, cell]) => el("td", { text: cell(m) })),
            ),
          ),
        ),
      ),
    );
  } catch (failure) {
    fill(target, el("p", { class: "error", text: t("perf_failed", { reason: failure.message }) }));
  }
});

// -- start -------------------------------------------------------------------------------

refresh();
setInterval(() => {
  if (!document.hidden) refresh();
}, REFRESH_MS);
