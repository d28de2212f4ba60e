// A study's report in the panel: loading it (the draft, or the last signed version to
// go on from), signing it (preliminary, final with the PIN, amendments with a reason) and
// its version history with each version's PDF, FHIR, HL7 and signature.

import { api, claimPath, dateTime, el, fill, statusBadge, studyPath, t } from "./common.js";
import { FINAL, flush, renderEditor } from "./editor.js";

let templates = null;
async function loadTemplates() {
  if (!templates) templates = await api("GET", "/api/report-templates");
  return templates;
}

export async function loadReport(study) {
  const section = study.sections.report;
  try {
    const [all, report] = await Promise.all([
      loadTemplates(),
      api("GET", `${studyPath(study.uid)}/report`),
    ]);
    study.templates = all;
    study.report = report;
  } catch (failure) {
    if (!study.isOpen()) return;
    const text =
      failure.status === 404 && failure.reason === "Not Found"
        ? t("report_unavailable")
        : failure.message;
    fill(section, el("h3", { text: t("report") }), el("p", { class: "muted", text }));
    return;
  }
  const report = study.report;
  study.template = report.template;
  study.language = report.language || "vi";
  study.texts = { sections: {}, findings: "", impression: "" };
  if (report.draft) {
    study.texts = {
      sections: { ...(report.draft.sections || {}) },
      findings: report.draft.findings || "",
      impression: report.draft.impression || "",
    };
    study.savedAt = report.draft_saved_at;
  } else if (report.versions.length) {
    await loadLastVersion(study);
  }
  if (!study.isOpen()) return;
  study.showHeader(); // with what the report knows of the study (birth date, sex)
  study.controls = (canEdit, message) => signingControls(study, canEdit, message);
  study.versions = () => renderVersions(study);
  renderEditor(study);
}

/** The last signed version's words, to start an amendment (or a final after a
 * preliminary) from. */
async function loadLastVersion(study) {
  const last = study.report.versions[study.report.versions.length - 1];
  try {
    const found = await api("GET", `${studyPath(study.uid)}/report/versions/${last.version}`);
    const doc = found.document;
    study.template = doc.template || study.template;
    study.language = doc.language || study.language;
    study.texts = {
      sections: Object.fromEntries((doc.sections || []).map((s) => [s.key, s.text])),
      findings: doc.findings || "",
      impression: doc.impression || "",
    };
  } catch {
    // the editor starts empty
  }
}

function signingControls(study, canEdit, message) {
  const report = study.report;
  const final = FINAL.has(report.status);
  if (final && !study.amending) {
    if (!study.held && study.holder) return null;
    return el(
      "div",
      { class: "sign-actions" },
      el("button", {
        type: "button",
        id: "amend",
        text: t("amend"),
        onclick: async () => {
          try {
            await api("POST", claimPath(study.uid));
            study.held = true;
            study.holder = null;
            study.keepClaim();
            study.amending = true;
            renderEditor(study);
          } catch (failure) {
            message.textContent = failure.message;
          }
        },
      }),
    );
  }
  if (!canEdit) return null;
  const pin = el("input", {
    type: "password",
    id: "sign-pin",
    autocomplete: "off",
    maxlength: "128",
  });
  const reason = study.amending
    ? el("input", { type: "text", id: "amend-reason", maxlength: "2000" })
    : null;
  const box = el(
    "div",
    { class: "sign-box", hidden: true },
    reason ? el("label", { for: "amend-reason", text: t("amend_reason") }) : null,
    reason,
    el("label", { for: "sign-pin", text: t("pin") }),
    pin,
    el(
      "div",
      { class: "actions" },
      el("button", {
        type: "button",
        class: "primary",
        id: "confirm-sign",
        text: t("sign"),
        onclick: () => {
          if (reason && !reason.value.trim()) {
            message.textContent = t("reason_needed");
            return;
          }
          if (!pin.value) {
            message.textContent = t("pin_needed");
            return;
          }
          const secret = pin.value;
          pin.value = "";
          sign(study, "final", secret, reason ? reason.value.trim() : null);
        },
      }),
      el("button", {
        type: "button",
        text: t("cancel"),
        onclick: () => {
          pin.value = "";
          box.hidden = true;
        },
      }),
    ),
  );
  pin.addEventListener("keydown", (event) => {
    if (event.key === "Enter") box.querySelector("#confirm-sign").click();
  });
  const buttons = el(
    "div",
    { class: "sign-actions" },
    final
      ? null
      : el("button", {
          type: "button",
          id: "sign-preliminary",
          text: t("sign_preliminary"),
          onclick: () => sign(study, "preliminary", null, null),
        }),
    el("button", {
      type: "button",
      class: "primary",
      id: "sign-final",
      text: study.amending ? t("sign_amendment") : t("sign_final"),
      onclick: () => {
        box.hidden = false;
        (reason || pin).focus();
      },
    }),
  );
  return el("div", { class: "signing" }, buttons, box);
}

async function sign(study, status, pin, reason) {
  const message = study.signMessage;
  message.classList.remove("ok");
  message.textContent = t("signing");
  study.dirty = true; // what is signed is what the editor shows
  await flush(study);
  if (study.saveError) {
    message.textContent = t("sign_failed", { reason: study.saveError.message });
    return;
  }
  try {
    const payload = { status };
    if (pin !== null) payload.pin = pin;
    if (reason) payload.reason = reason;
    const signed = await api("POST", `${studyPath(study.uid)}/report/sign`, payload);
    if (signed.status !== "preliminary") study.held = false; // the archive let it go
    study.amending = false;
    await loadReport(study);
    if (!study.isOpen()) return;
    study.signMessage.textContent = t("signed", { version: signed.version });
    study.signMessage.classList.add("ok");
    study.changed();
  } catch (failure) {
    message.textContent = t("sign_failed", { reason: failure.message });
  }
}

function renderVersions(study) {
  const section = study.sections.versions;
  const versions = study.report.versions;
  const base = `${studyPath(study.uid)}/report/versions`;
  const link = (path, text) =>
    el("a", { href: `${base}/${path}`, target: "_blank", rel: "noopener", text });
  fill(
    section,
    el("h3", { text: t("versions") }),
    versions.length
      ? el(
          "ol",
          { class: "version-list" },
          versions
            .slice()
            .reverse()
            .map((v) =>
              el(
                "li",
                { "data-version": String(v.version) },
                el("strong", { text: t("version", { version: v.version }) }),
                " ",
                statusBadge(v.status),
                " ",
                el("span", {
                  class: "muted",
                  text: `${t("by", { name: v.signed_by || "" })} · ${v.signed_at ? dateTime(v.signed_at) : ""}`,
                }),
                v.reason ? el("div", { class: "reason", text: v.reason }) : null,
                el(
                  "div",
                  { class: "links" },
                  link(`${v.version}/pdf`, "PDF"),
                  link(`${v.version}/fhir`, "FHIR"),
                  link(`${v.version}/hl7`, "HL7"),
                  v.signed ? link(`${v.version}/signature`, t("signature")) : null,
                ),
              ),
            ),
        )
      : el("p", { class: "muted", text: t("no_versions") }),
  );
}
