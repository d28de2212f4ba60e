// The side panel: a study opened from the list is claimed (others see it locked) while
// the panel shows it, with the patient and study, "Open images" (OHIF, in a new tab), the
// AI findings, the priors and the report; closing the panel lets the study go.

import { loadFindings } from "./ai_findings.js";
import {
  T,
  api,
  claimPath,
  dicomDate,
  el,
  fill,
  lockIcon,
  modalities,
  personName,
  studyPath,
  t,
  viewerUrl,
} from "./common.js";
import { flush } from "./editor.js";
import { loadReport } from "./report.js";

const RENEW_MS = 5 * 60_000; // a claim holds 30 minutes: renewed while the panel is open
const panel = document.getElementById("panel");

/** The study open in the panel: {uid, row, held, holder, report, templates, ...}. */
let opened = null;

function holderFrom(reason) {
  const found = /^(.+?) is reading this study/.exec(reason || "");
  return found ? found[1] : null;
}

/** The uid of the study in the panel, or null. */
export function openedUid() {
  return opened ? opened.uid : null;
}

/** Tell the list the panel changed (it marks the open row and refreshes). */
function changed() {
  document.dispatchEvent(new CustomEvent("panelchange"));
}

export async function openStudy(row) {
  const uid = row.study_instance_uid;
  if (opened && opened.uid === uid) return;
  if (opened) await closeStudy();
  const study = {
    uid,
    row,
    held: false,
    holder: null,
    amending: false,
    dirty: false,
    timer: null,
    saving: Promise.resolve(),
    isOpen: () => opened === study,
    showHeader: () => {
      const [head, facts] = renderHeader(study);
      panel.querySelector(".panel-head").replaceWith(head);
      panel.querySelector(".facts").replaceWith(facts);
    },
    keepClaim: () => {
      clearInterval(study.renew);
      study.renew = setInterval(() => renew(study), RENEW_MS);
    },
    changed,
  };
  opened = study;
  changed();
  panel.hidden = false;
  fill(panel, el("p", { class: "muted", text: "…" }));
  try {
    await api("POST", claimPath(uid));
    study.held = true;
  } catch (failure) {
    if (failure.status === 409) {
      study.holder = holderFrom(failure.reason) || row.claimed_by || "?";
    } else {
      study.claimError = t("claim_failed", { reason: failure.message });
    }
  }
  if (!study.isOpen()) return;
  if (study.held) study.keepClaim();
  renderPanel(study);
  changed();
}

async function renew(study) {
  try {
    await api("POST", claimPath(study.uid));
  } catch (failure) {
    if (failure.status === 409) {
      study.held = false;
      study.holder = holderFrom(failure.reason);
      renderPanel(study);
    }
  }
}

export async function closeStudy() {
  const study = opened;
  if (!study) return;
  clearInterval(study.renew);
  await flush(study).catch(() => undefined);
  opened = null;
  panel.hidden = true;
  fill(panel);
  if (study.held) await api("DELETE", claimPath(study.uid)).catch(() => undefined);
  changed();
}

window.addEventListener("pagehide", () => {
  if (opened && opened.held) {
    fetch(claimPath(opened.uid), {
      method: "DELETE",
      keepalive: true,
      credentials: "same-origin",
    });
  }
});

function fact(label, value) {
  if (!value) return null;
  return [el("dt", { text: label }), el("dd", { text: value })];
}

function renderHeader(study) {
  const s = (study.report && study.report.study) || study.row;
  const sex = s.sex ? T[`sex_${s.sex}`] || s.sex : null;
  return [
    el(
      "header",
      { class: "panel-head" },
      el("h2", { id: "panel-title", text: personName(s.patient_name) }),
      el("button", {
        type: "button",
        class: "close",
        "aria-label": t("close"),
        title: t("close"),
        text: "×",
        onclick: () => closeStudy(),
      }),
    ),
    el(
      "dl",
      { class: "facts" },
      fact(t("patient_id"), s.patient_id),
      fact(t("birth_date"), dicomDate(s.birth_date)),
      fact(t("sex"), sex),
      fact(
        t("col_study"),
        [dicomDate(s.study_date), s.study_description].filter(Boolean).join(" · "),
      ),
      fact(t("col_modality"), modalities(s.modalities_in_study)),
      fact(t("col_hospital"), s.hospital),
      fact(t("accession"), s.accession_number),
    ),
  ];
}

function renderPanel(study) {
  if (!study.isOpen()) return;
  const lock = study.holder
    ? el(
        "p",
        { class: "lock-banner", role: "alert" },
        lockIcon(),
        t("locked_by", { name: study.holder }),
      )
    : null;
  const problem = study.claimError
    ? el("p", { class: "error", role: "alert", text: study.claimError })
    : null;
  study.sections = {
    ai: el("section", { class: "ai-findings" }, el("h3", { text: t("ai_findings") })),
    priors: el("section", { class: "priors", hidden: true }),
    report: el("section", { class: "report" }, el("h3", { text: t("report") })),
    versions: el("section", { class: "versions" }),
  };
  fill(
    panel,
    ...renderHeader(study),
    lock,
    problem,
    el("a", {
      class: "button primary",
      id: "open-images",
      href: viewerUrl(study.uid),
      target: "_blank",
      rel: "noopener",
      text: t("open_images"),
    }),
    study.sections.ai,
    study.sections.priors,
    study.sections.report,
    study.sections.versions,
  );
  loadFindings(study);
  loadPriors(study);
  loadReport(study);
}

// -- priors ----------------------------------------------------------------------------

async function loadPriors(study) {
  const section = study.sections.priors;
  let found;
  try {
    found = await api("GET", `${studyPath(study.uid)}/priors`);
  } catch {
    return; // not on this server, or not for this reader: nothing to show
  }
  if (!study.isOpen() || !found) return;
  const priors = found.priors || [];
  const suggestions = found.suggestions || [];
  const priorItem = (prior) =>
    el(
      "li",
      {},
      el("span", { text: dicomDate(prior.study_date) }),
      " ",
      el("span", { text: prior.study_description || "" }),
      " ",
      el("small", {
        class: "muted",
        text: [
          (prior.modalities || []).join(", "),
          prior.hospital,
          prior.match ? t(`match_${prior.match}`) : "",
        ]
          .filter(Boolean)
          .join(" · "),
      }),
      " ",
      el("a", {
        href: viewerUrl(study.uid, prior.study_instance_uid),
        target: "_blank",
        rel: "noopener",
        text: t("compare"),
      }),
    );
  const content = [el("h3", { text: t("priors") })];
  content.push(
    priors.length
      ? el("ul", { class: "prior-list" }, priors.map(priorItem))
      : el("p", { class: "muted", text: t("no_priors") }),
  );
  if (suggestions.length) {
    content.push(el("h4", { text: t("suggestions") }));
    content.push(
      el(
        "ul",
        { class: "prior-list" },
        suggestions.map((record) => {
          const other = (record.studies || [])[0];
          return el(
            "li",
            {},
            el("strong", { text: personName(record.patient_name) }),
            " ",
            el("small", {
              class: "muted",
              text: [record.patient_id, dicomDate(record.birth_date), record.hospital]
                .filter(Boolean)
                .join(" · "),
            }),
            other
              ? el("button", {
                  type: "button",
                  text: t("confirm_same"),
                  onclick: async () => {
                    await api(
                      "POST",
                      `${studyPath(study.uid)}/priors/${encodeURIComponent(other.study_instance_uid)}`,
                    ).catch(() => undefined);
                    loadPriors(study);
                  },
                })
              : null,
          );
        }),
      ),
    );
  }
  fill(section, ...content);
  section.hidden = false;
}
