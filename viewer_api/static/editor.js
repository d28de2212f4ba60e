// The report editor in the panel: the template's fields (each with its "Normal" text),
// free-text findings and the impression, the draft saved as the radiologist types.

import { LANG, api, clock, el, fill, statusBadge, studyPath, t } from "./common.js";

const AUTOSAVE_MS = 800;
export const FINAL = new Set(["final", "amended"]);

export function templateOf(study) {
  return study.templates.find((x) => x.key === study.template) || study.templates[0];
}

export function editable(study) {
  return study.held && (!FINAL.has(study.report.status) || study.amending);
}

export function renderEditor(study) {
  const section = study.sections.report;
  const report = study.report;
  const template = templateOf(study);
  const canEdit = editable(study);
  const L = study.language;
  const changed = () => {
    study.dirty = true;
    clearTimeout(study.timer);
    study.timer = setTimeout(() => save(study), AUTOSAVE_MS);
  };

  const templateSelect = el(
    "select",
    {
      id: "report-template",
      disabled: !canEdit,
      onchange: (event) => {
        study.template = event.target.value;
        renderEditor(study);
        changed();
      },
    },
    study.templates.map((x) =>
      el("option", {
        value: x.key,
        selected: x.key === template.key,
        text: x.title[LANG] || x.title.vi,
      }),
    ),
  );
  const languageSelect = el(
    "select",
    {
      id: "report-language",
      disabled: !canEdit,
      onchange: (event) => {
        study.language = event.target.value;
        renderEditor(study);
        changed();
      },
    },
    ["vi", "en"].map((code) =>
      el("option", { value: code, selected: code === L, text: t(`language_${code}`) }),
    ),
  );

  const area = (id, label, value, onInput, normal) => {
    const textarea = el("textarea", {
      id,
      rows: "2",
      readonly: !canEdit,
      oninput: (event) => {
        onInput(event.target.value);
        changed();
      },
    });
    textarea.value = value || "";
    const normalButton = normal
      ? el("button", {
          type: "button",
          class: "normal",
          disabled: !canEdit,
          text: t("normal"),
          title: normal,
          onclick: () => {
            textarea.value = normal;
            onInput(normal);
            changed();
          },
        })
      : null;
    return el(
      "div",
      { class: "field", "data-field": id },
      el("div", { class: "field-head" }, el("label", { for: id, text: label }), normalButton),
      textarea,
    );
  };

  const fields = template.fields.map((field) =>
    area(
      `field-${field.key}`,
      field.label[L],
      study.texts.sections[field.key],
      (value) => {
        study.texts.sections[field.key] = value;
      },
      field.normal[L],
    ),
  );
  const findings = area("report-findings", t("findings"), study.texts.findings, (value) => {
    study.texts.findings = value;
  });
  const impression = area(
    "report-impression",
    t("impression"),
    study.texts.impression,
    (value) => {
      study.texts.impression = value;
    },
    template.impression[L],
  );

  study.saveStatus = el("span", {
    class: "save-status",
    role: "status",
    text: study.savedAt ? t("saved", { time: clock(study.savedAt) }) : "",
  });
  const message = el("p", { class: "sign-message", role: "alert" });
  study.signMessage = message;

  fill(
    section,
    el("h3", {}, t("report"), " ", el("span", { id: "report-status" }, statusBadge(report.status))),
    el(
      "div",
      { class: "report-options" },
      el("label", {}, t("template"), templateSelect),
      el("label", {}, t("language"), languageSelect),
      study.saveStatus,
    ),
    fields,
    findings,
    impression,
    study.controls(canEdit, message),
    message,
  );
  study.versions();
}

function draftBody(study) {
  const template = templateOf(study);
  const sections = {};
  for (const field of template.fields) sections[field.key] = study.texts.sections[field.key] || "";
  return {
    template: template.key,
    language: study.language,
    sections,
    findings: study.texts.findings,
    impression: study.texts.impression,
  };
}

export function save(study) {
  clearTimeout(study.timer);
  study.saving = study.saving.then(async () => {
    if (!study.dirty || !study.report) return;
    study.dirty = false;
    if (study.saveStatus) study.saveStatus.textContent = t("saving");
    try {
      const saved = await api("PUT", `${studyPath(study.uid)}/report/draft`, draftBody(study));
      study.savedAt = saved.saved_at;
      if (study.report.status === "none") {
        study.report.status = "draft";
        const badge = document.getElementById("report-status");
        if (badge) fill(badge, statusBadge("draft"));
      }
      if (study.saveStatus)
        study.saveStatus.textContent = t("saved", { time: clock(saved.saved_at) });
      study.saveError = null;
    } catch (failure) {
      study.dirty = true;
      study.saveError = failure;
      if (study.saveStatus) {
        study.saveStatus.textContent = t("save_failed", { reason: failure.message });
        study.saveStatus.classList.add("error");
      }
      return;
    }
    if (study.saveStatus) study.saveStatus.classList.remove("error");
  });
  return study.saving;
}

export async function flush(study) {
  clearTimeout(study.timer);
  await save(study);
}
