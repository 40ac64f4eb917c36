// Jupyter Book adds every .js file in book/_static to each page.
//
// A figure drawn wider than the page shows it (a multi-panel figure in a column of about 700
// pixels) opens at full size when clicked: each such image becomes a link to its own file.
window.addEventListener("load", () => {
  for (const image of document.querySelectorAll("main img")) {
    if (image.closest("a") || image.naturalWidth < 1.25 * image.clientWidth) continue;
    const link = document.createElement("a");
    link.className = "full-size";
    link.href = image.src;
    link.title = "Open the figure at full size";
    image.replaceWith(link);
    link.appendChild(image);
  }
});
