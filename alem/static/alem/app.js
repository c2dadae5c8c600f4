// Progressive enhancement shared by every page; the pages work without it.
// Loaded as a file (the Content-Security-Policy forbids inline scripts).
document.addEventListener("DOMContentLoaded", () => {
  // Put the keyboard on the first field a form refused, so the message beside it is read out.
  const invalid = document.querySelector(".field--error input, .field--error select, .field--error textarea");
  if (invalid) invalid.focus();
});
