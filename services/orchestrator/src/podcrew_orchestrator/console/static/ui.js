// Small DOM helpers shared by the console's modules; text always goes in as text.

export const $ = (id) => document.getElementById(id);

export function showError(error) {
  $("error").textContent = error.message;
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

/** <tag class=className> holding `children` (strings become text nodes). */
export function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children);
  return node;
}

export const statusBadge = (status) => el("span", `status ${status}`, status);

export const runPath = (id) => `/v1/runs/${encodeURIComponent(id)}`;
