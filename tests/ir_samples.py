# ruff: noqa: E501  (sample texts, kept whole)
"""A small real IR sample in the shapes the IR ecosystem uses: BEIR's folder, Pyserini's JSONL, MS MARCO's TSV.

Eight SciFact claims (BEIR SciFact query ids), the abstracts SciFact judges relevant to them (BEIR SciFact corpus
ids; title and the first two sentences) and four other SciFact abstracts on the same topics, taken from the
mini-KILT SciFact sample (``shared/minikilt/scifact``).
"""

from __future__ import annotations

import json
from pathlib import Path

# (_id, title, text): the title and first two sentences of eight SciFact abstracts
DOCS = [
    ('11705328', 'Randomized trial of folic acid supplementation and serum homocysteine levels.',
     'BACKGROUND Lowering serum homocysteine levels with folic acid is expected to reduce mortality from ischemic heart disease. Homocysteine reduction is known to be maximal at a folic acid dosage of 1 mg/d, but the effect of lower doses (relevant to food fortification) is unclear.'),
    ('49556906', 'Metformin reverses established lung fibrosis in a bleomycin model',
     'Fibrosis is a pathological result of a dysfunctional repair response to tissue injury and occurs in a number of organs, including the lungs1. Cellular metabolism regulates tissue repair and remodelling responses to injury2-4.'),
    ('31460499', 'Resistance to antimicrobials in humans and animals.',
     'Overusing antibiotics is not the only cause and reducing use is not the only solution   W arning signs of antimicrobial resistance, chinks in the antimicrobial armour, began to appear in the middle of the last century, and by the 1990s various reports had signalled the dangers of excessive or inappropriate use of antibiotics in clinical medicine and of the use of antibiotics in animal feed as growth promoters.1–3 Overuse of antimicrobials emerged as the main culprit, and reducing their use was seen as the answer. But it may not be that simple.'),
    ('2033917', 'Clathrin is required for the function of the mitotic spindle',
     'Clathrin has an established function in the generation of vesicles that transfer membrane and proteins around the cell. The formation of clathrin-coated vesicles occurs continuously in non-dividing cells, but is shut down during mitosis, when clathrin concentrates at the spindle apparatus.'),
    ('4319174', 'Alternatively activated macrophages produce catecholamines to sustain adaptive thermogenesis',
     'All homeotherms use thermogenesis to maintain their core body temperature, ensuring that cellular functions and physiological processes can continue in cold environments. In the prevailing model of thermogenesis, when the hypothalamus senses cold temperatures it triggers sympathetic discharge, resulting in the release of noradrenaline in brown adipose tissue and white adipose tissue.'),
    ('5824985', 'Bariatric Surgery in the United Kingdom: A Cohort Study of Weight Loss and Clinical Outcomes in Routine Clinical Care.',
     'BACKGROUND Bariatric surgery is becoming a more widespread treatment for obesity. Comprehensive evidence of the long-term effects of contemporary surgery on a broad range of clinical outcomes in large populations treated in routine clinical practice is lacking.'),
    ('4421578', 'Broad and potent neutralization of HIV-1 by a gp41-specific human antibody',
     'Characterization of human monoclonal antibodies is providing considerable insight into mechanisms of broad HIV-1 neutralization. Here we report an HIV-1 gp41 membrane-proximal external region (MPER)-specific antibody, named 10E8, which neutralizes ∼98% of tested viruses.'),
    ('19205437', 'UCP1-independent signaling involving SERCA2b-mediated calcium cycling regulates beige fat thermogenesis and systemic glucose homeostasis',
     'Uncoupling protein 1 (UCP1) plays a central role in nonshivering thermogenesis in brown fat; however, its role in beige fat remains unclear. Here we report a robust UCP1-independent thermogenic mechanism in beige fat that involves enhanced ATP-dependent Ca2+ cycling by sarco/endoplasmic reticulum Ca2+-ATPase 2b (SERCA2b) and ryanodine receptor 2 (RyR2).'),
]
# four more SciFact abstracts on the same topics, judged for none of the claims
DISTRACTORS = [
    ('3215494', 'Hyperhomocysteinemia and atherosclerotic vascular disease: pathophysiology, screening, and treatment. off.',
     'Hyperhomocysteinemia has recently been identified as an important risk factor for atherosclerotic vascular disease. This article reviews homocysteine metabolism, causes of hyperhomocysteinemia, the pathophysiological findings of this disorder, and epidemiological studies of homocysteine and vascular disease.'),
    ('1568684', 'The Bile Acid Chenodeoxycholic Acid Increases Human Brown Adipose Tissue Activity.',
     'The interest in brown adipose tissue (BAT) as a target to combat metabolic disease has recently been renewed with the discovery of functional BAT in humans. In rodents, BAT can be activated by bile acids, which activate type 2 iodothyronine deiodinase (D2) in BAT via the G-coupled protein receptor TGR5, resulting in increased oxygen consumption and energy expenditure.'),
    ('350542', 'Antimicrobial peptide pleurocidin synergizes with antibiotics through hydroxyl radical formation and membrane damage, and exerts antibiofilm activity.',
     'BACKGROUND Pleurocidin, a 25-mer antimicrobial peptide (AMP), is known to exert bactericidal activity. However, the synergistic activity and mechanism(s) of pleurocidin in combination with conventional antibiotics, and the antibiofilm effect of the peptide are poorly understood.'),
    ('5560962', 'Somatic Mutations of the Immunoglobulin Framework Are Generally Required for Broad and Potent HIV-1 Neutralization',
     'Broadly neutralizing antibodies (bNAbs) to HIV-1 can prevent infection and are therefore of great importance for HIV-1 vaccine design. Notably, bNAbs are highly somatically mutated and generated by a fraction of HIV-1-infected individuals several years after infection.'),
]
# (_id, text): SciFact claims
QUERIES = [
    ('34', 'A deficiency of folate increases blood levels of homocysteine.'),
    ('55', 'AMP-activated protein kinase (AMPK) activation reduces inflammation-related fibrosis in the lungs.'),
    ('121', 'Antimicrobial agents are less effective due to the pressure of antimicrobial usage.'),
    ('265', 'Clathrin stabilizes the spindle fiber apparatus during mitosis.'),
    ('109', 'An M2-like phenotype in brown adipose tissue macrophages is quickly induced by cold exposure.'),
    ('169', 'Bariatric surgery reduces postmenopausal breast cancer.'),
    ('189', 'Broadly HIV-1 Neutralizing Antibodies (bnAb) 10EB have no affinity for phospholipids.'),
    ('222', 'Ca2+ cycling is a UCP1-independent thermogenic mechanism.'),
]
# (query-id, corpus-id, score): SciFact's judgments of those claims
QRELS = [
    ('34', '11705328', 1),
    ('55', '49556906', 1),
    ('121', '31460499', 1),
    ('265', '2033917', 1),
    ('109', '4319174', 1),
    ('169', '5824985', 1),
    ('189', '4421578', 1),
    ('222', '19205437', 1),
]
CORPUS = DOCS + DISTRACTORS


def write_beir(folder: Path, *, split: str = "test") -> Path:
    """BEIR's layout: corpus.jsonl {_id, title, text, metadata}, queries.jsonl {_id, text, metadata},
    qrels/SPLIT.tsv with the header query-id, corpus-id, score."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, title, text in CORPUS:
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text, "metadata": {}}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in QUERIES:
            fh.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, doc_id, rel in QRELS:
            fh.write(f"{qid}\t{doc_id}\t{rel}\n")
    return folder


def write_pyserini(path: Path) -> Path:
    """Pyserini's JsonCollection: {id, contents}, the title on the first line of contents."""
    with open(path, "w", encoding="utf-8") as fh:
        for doc_id, title, text in CORPUS:
            fh.write(json.dumps({"id": doc_id, "contents": f"{title}\n{text}"}) + "\n")
    return path


def write_msmarco(folder: Path) -> tuple[Path, Path, Path]:
    """MS MARCO's passage-ranking files: collection.tsv (pid, passage), queries.tsv (qid, query) and TREC qrels
    (qid 0 pid relevance)."""
    folder.mkdir(parents=True, exist_ok=True)
    collection, queries, qrels = folder / "collection.tsv", folder / "queries.tsv", folder / "qrels.txt"
    collection.write_text("".join(f"{doc_id}\t{title} {text}\n" for doc_id, title, text in CORPUS), encoding="utf-8")
    queries.write_text("".join(f"{qid}\t{text}\n" for qid, text in QUERIES), encoding="utf-8")
    qrels.write_text("".join(f"{qid} 0 {doc_id} {rel}\n" for qid, doc_id, rel in QRELS), encoding="utf-8")
    return collection, queries, qrels
