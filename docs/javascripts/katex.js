// Typeset every equation with the KaTeX files the site carries (no CDN: the site works offline).
// Markdown pages mark math with pymdownx.arithmatex (\( \) and \[ \]); notebook pages keep $ and $$.
function typesetMath() {
  renderMathInElement(document.body, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "\\[", right: "\\]", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
    ],
    throwOnError: false,
  });
}
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", typesetMath);
} else {
  typesetMath();
}
