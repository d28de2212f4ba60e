// The study's AI findings in the panel, with the reader's verdict on each (agree or
// disagree, and what she would call it instead).

import { ME, api, el, fill, score, severityBadge, studyPath, t } from "./common.js";

export async function loadFindings(study) {
  const section = study.sections.ai;
  const content = [];
  try {
    const jobs = await api("GET", `${studyPath(study.uid)}/ai-findings`);
    if (!jobs.length) content.push(el("p", { class: "muted", text: t("no_findings") }));
    for (const job of jobs) content.push(findingOf(study, job));
  } catch {
    // No findings endpoint (or no access): what the worklist row says.
    const row = study.row;
    if (row.ai_severity) {
      content.push(
        el(
          "div",
          { class: "finding-card" },
          severityBadge(row.ai_severity),
          el("strong", { text: row.ai_finding || "" }),
          el("span", {
            class: "muted",
            text: ` ${row.ai_model || ""} · ${t("score")} ${score(row.ai_score)}`,
          }),
        ),
      );
    } else {
      content.push(el("p", { class: "muted", text: t("no_findings") }));
    }
  }
  content.push(el("p", { class: "disclaimer", text: t("ai_disclaimer") }));
  if (!study.isOpen()) return;
  fill(section, el("h3", { text: t("ai_findings") }), ...content);
}

function findingOf(study, job) {
  const mine = (job.reviews || []).find((r) => r.reviewer === ME);
  const label = el("input", {
    type: "text",
    class: "label-input",
    maxlength: "128",
    placeholder: t("correct_label"),
    "aria-label": t("correct_label"),
    value: mine && mine.correct_label ? mine.correct_label : "",
  });
  const verdict = async (value) => {
    try {
      await api("PUT", `/api/ai/jobs/${job.id}/review`, {
        verdict: value,
        correct_label: label.value.trim() || null,
      });
      loadFindings(study);
    } catch (failure) {
      card.append(el("p", { class: "error", text: failure.message }));
    }
  };
  const others = (job.reviews || []).filter((r) => r.reviewer !== ME);
  const card = el(
    "div",
    { class: `finding-card${job.flagged ? " flagged" : ""}`, "data-job": String(job.id) },
    el(
      "div",
      { class: "finding-title" },
      job.flagged ? severityBadge(job.severity || "flagged") : null,
      el("strong", { text: job.finding || job.model }),
    ),
    el("div", {
      class: "muted",
      text: `${job.model} ${job.model_version || ""} · ${t("score")} ${score(job.score)} (${t("threshold")} ${score(job.threshold)})`,
    }),
    mine
      ? el("div", {
          class: `verdict verdict-${mine.verdict}`,
          text:
            t("your_verdict", { verdict: t(`verdict_${mine.verdict}`) }) +
            (mine.correct_label ? ` (${mine.correct_label})` : ""),
        })
      : null,
    others.length
      ? el("div", {
          class: "muted",
          text: others.map((r) => `${r.reviewer}: ${t(`verdict_${r.verdict}`)}`).join(", "),
        })
      : null,
    el(
      "div",
      { class: "actions" },
      el("button", {
        type: "button",
        class: "agree",
        text: t("agree"),
        onclick: () => verdict("agree"),
      }),
      el("button", {
        type: "button",
        class: "disagree",
        text: t("disagree"),
        onclick: () => verdict("disagree"),
      }),
      label,
    ),
  );
  return card;
}
