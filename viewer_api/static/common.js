// What every part of the worklist page shares: its words, building elements, calling the
// API, and showing names, dates, times and badges.

const config = JSON.parse(document.getElementById("page-config").textContent);
export const T = config.text;
export const LANG = config.language;
export const ME = config.user;
const SVG = "http://www.w3.org/2000/svg";

export function t(key, values = {}) {
  let text = T[key] ?? key;
  for (const [name, value] of Object.entries(values)) {
    text = text.replaceAll(`{${name}}`, String(value));
  }
  return text;
}

/** An element: `attrs` are attributes (class, text, on* handlers, others as given). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace `node`'s children with `children` (arrays flattened, nothing for null). */
export function fill(node, ...children) {
  node.replaceChildren(
    ...children.flat(2).filter((child) => child !== null && child !== undefined && child !== false),
  );
}

export class ApiFailure extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
    this.reason = reason;
  }
}

function reasonOf(data, fallback) {
  const detail = data && (data.detail ?? data.reason ?? data.error_description);
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg ?? JSON.stringify(d)).join("; ");
  return fallback;
}

export async function api(method, path, payload) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (payload !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(payload);
  }
  const answer = await fetch(path, options);
  const type = answer.headers.get("content-type") || "";
  const data = type.includes("json") ? await answer.json().catch(() => null) : null;
  if (answer.status === 401) {
    window.location.assign(`/signin?next=${encodeURIComponent("/worklist")}`);
  }
  if (!answer.ok) throw new ApiFailure(answer.status, reasonOf(data, answer.statusText));
  return data;
}

/** DICOM PN "Nguyễn^Văn An" as a person writes it: "Nguyễn Văn An". */
export function personName(pn) {
  if (!pn) return "";
  const [family, given, middle, prefix, suffix] = pn.split("=")[0].split("^");
  return [prefix, family, given, middle, suffix].filter((part) => part && part.trim()).join(" ");
}

export function dicomDate(value) {
  if (!value || !/^\d{8}$/.test(value)) return value || "";
  const [y, m, d] = [value.slice(0, 4), value.slice(4, 6), value.slice(6, 8)];
  return LANG === "vi" ? `${d}/${m}/${y}` : `${y}-${m}-${d}`;
}

const pad = (n) => String(n).padStart(2, "0");

export function clock(iso, seconds = false) {
  const when = iso ? new Date(iso) : new Date();
  const hm = `${pad(when.getHours())}:${pad(when.getMinutes())}`;
  return seconds ? `${hm}:${pad(when.getSeconds())}` : hm;
}

export function dateTime(iso) {
  const when = new Date(iso);
  const day = `${when.getFullYear()}${pad(when.getMonth() + 1)}${pad(when.getDate())}`;
  return `${dicomDate(day)} ${clock(iso)}`;
}

/** "2 h 15 min" (or "2 giờ 15 phút") since `iso`. */
export function waiting(iso) {
  const minutes = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 60_000));
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  const rest = minutes % 60;
  if (days) return `${days} ${t("unit_day")} ${hours} ${t("unit_hour")}`;
  if (hours) return `${hours} ${t("unit_hour")} ${rest} ${t("unit_minute")}`;
  return `${rest} ${t("unit_minute")}`;
}

export const modalities = (value) => (value || "").split("\\").filter(Boolean).join(", ");
export const score = (value) => (typeof value === "number" ? value.toFixed(2) : "");
export const percent = (value) => (typeof value === "number" ? `${Math.round(value * 100)}%` : "—");
export const studyPath = (uid) => `/api/studies/${encodeURIComponent(uid)}`;
export const claimPath = (uid) => `/api/worklist/${encodeURIComponent(uid)}/claim`;
export const viewerUrl = (...uids) =>
  `/viewer?StudyInstanceUIDs=${uids.map(encodeURIComponent).join(",")}`;

export function severityBadge(severity) {
  if (!severity) return null;
  return el("span", { class: `badge severity-${severity}`, text: t(`severity_${severity}`) });
}

export function statusBadge(status) {
  return el("span", { class: `status status-${status}`, text: t(`status_${status}`) });
}

export function lockIcon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("class", "lock");
  svg.setAttribute("aria-hidden", "true");
  const shackle = document.createElementNS(SVG, "path");
  shackle.setAttribute("d", "M4.5 7V5a3.5 3.5 0 0 1 7 0v2");
  shackle.setAttribute("fill", "none");
  shackle.setAttribute("stroke", "currentColor");
  shackle.setAttribute("stroke-width", "1.6");
  const box = document.createElementNS(SVG, "rect");
  box.setAttribute("x", "2.5");
  box.setAttribute("y", "7");
  box.setAttribute("width", "11");
  box.setAttribute("height", "8");
  box.setAttribute("rx", "1.5");
  box.setAttribute("fill", "currentColor");
  svg.append(shackle, box);
  return svg;
}
